"""What goes wrong in a local run, said in one line (the CLI prints it without a traceback)."""


class PipelineFailed(RuntimeError):
    """A task failed, or could not be started; the message names it, its reason and the log file."""
