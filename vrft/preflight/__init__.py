"""Before a GPU hour is spent: image tokens, prompt lengths and peak GPU memory, from files alone.

* :mod:`vrft.preflight.images` reads the image sizes of a dataset's sources (before stage 1 has run);
* :mod:`vrft.preflight.tokens` counts image tokens with the checkpoint's own image processor and
  prompt tokens with its tokenizer and chat template;
* :mod:`vrft.preflight.memory` estimates the peak GPU memory per rank of a training or evaluation
  stage from the model's config (a meta-device model: no weights).

``vrft preflight`` (and ``vrft run/submit/schedule`` before they start) puts them together for a
whole pipeline: :mod:`vrft.pipelines.preflight`.
"""
