"""What a stage's pod is given: requests below limits, and caches on its scratch volume.

A pod is scheduled on its *requests*; its *limits* cap what it may use. With requests equal to
limits (what Kubernetes assumes when only limits are given) a 512Gi limit never fits a 512 GiB
node, whose allocatable memory is always a little less than its capacity. So a stage's requests
default to 7/8 of its limits (:data:`REQUEST_FRACTION`) unless ``cpu_request``/``memory_request``
are set; GPUs are requested exactly (an extended resource's request must equal its limit).

>>> default_request("512Gi"), default_request("4Gi"), default_request("32"), default_request("1")
('448Gi', '3584Mi', '28', '875m')
>>> parse_quantity("1.5Gi") == 1.5 * 2**30, parse_quantity("500m") == 0.5
(True, True)
"""

from __future__ import annotations

import re
from decimal import Decimal, InvalidOperation

REQUEST_FRACTION = Decimal(7) / Decimal(8)

SCRATCH_MOUNT = "/scratch"
#: Caches of Hugging Face, datasets, torch and DeepSpeed's JIT ops on the scratch volume: the image's
#: home directory is on the container's root file system, which is small (and read-only where the
#: pod allows it).
CACHE_ENV = {
    "HF_HOME": f"{SCRATCH_MOUNT}/cache/huggingface",
    "HF_DATASETS_CACHE": f"{SCRATCH_MOUNT}/cache/huggingface/datasets",
    "TORCH_HOME": f"{SCRATCH_MOUNT}/cache/torch",
    "TORCH_EXTENSIONS_DIR": f"{SCRATCH_MOUNT}/cache/torch_extensions",
    "TRITON_CACHE_DIR": f"{SCRATCH_MOUNT}/cache/triton",
    "XDG_CACHE_HOME": f"{SCRATCH_MOUNT}/cache",
    "VRFT_CACHE_DIR": f"{SCRATCH_MOUNT}/cache/vrft",
}
#: The images' user (docker/*.Dockerfile: USER 1000:1000); numeric so that runAsNonRoot can check it.
POD_USER = 1000

_BINARY = {"Ki": 2**10, "Mi": 2**20, "Gi": 2**30, "Ti": 2**40, "Pi": 2**50, "Ei": 2**60}
_DECIMAL = {"n": Decimal("1e-9"), "u": Decimal("1e-6"), "m": Decimal("1e-3"), "": Decimal(1),
            "k": Decimal(10**3), "M": Decimal(10**6), "G": Decimal(10**9), "T": Decimal(10**12),
            "P": Decimal(10**15), "E": Decimal(10**18)}  # fmt: skip
_QUANTITY = re.compile(r"^([0-9]+(?:\.[0-9]*)?|\.[0-9]+)([a-zA-Z]*)$")


def parse_quantity(text: str) -> Decimal:
    """A Kubernetes quantity (``16Gi``, ``500m``, ``8``, ``1e3`` not supported) in base units."""
    match = _QUANTITY.match(str(text).strip())
    if not match:
        raise ValueError(f"{text!r} is not a Kubernetes quantity (e.g. 16Gi, 500m, 8)")
    number, suffix = match.groups()
    try:
        value = Decimal(number)
    except InvalidOperation:
        raise ValueError(f"{text!r} is not a Kubernetes quantity (e.g. 16Gi, 500m, 8)") from None
    if suffix in _BINARY:
        return value * _BINARY[suffix]
    if suffix in _DECIMAL:
        return value * _DECIMAL[suffix]
    raise ValueError(f"{text!r}: unknown suffix {suffix!r} (Ki, Mi, Gi, Ti, m, k, M, G, ...)")


def default_request(limit: str) -> str:
    """7/8 of ``limit``, in the largest unit that keeps it whole (binary for binary limits)."""
    value = parse_quantity(limit) * REQUEST_FRACTION
    if re.search(r"[KMGTPE]i$", limit.strip()):
        for suffix in ("Ei", "Pi", "Ti", "Gi", "Mi", "Ki"):
            scaled = value / _BINARY[suffix]
            if scaled >= 1 and scaled == scaled.to_integral_value():
                return f"{int(scaled)}{suffix}"
        return str(int(value))
    if value == value.to_integral_value():
        return str(int(value))
    return f"{int(value * 1000)}m"


def requests_for(cpu: str, memory: str, cpu_request: str = "", memory_request: str = "") -> tuple[str, str]:
    """The (cpu, memory) requests of a pod with these limits: as given, else :func:`default_request`."""
    return cpu_request or default_request(cpu), memory_request or default_request(memory)


def request_problems(name: str, cpu: str, memory: str, cpu_request: str, memory_request: str) -> list[str]:
    """Requests above their limits, or quantities Kubernetes would reject, one sentence each."""
    problems = []
    for what, limit, request in (("cpu", cpu, cpu_request), ("memory", memory, memory_request)):
        try:
            limit_value = parse_quantity(limit)
            if request and parse_quantity(request) > limit_value:
                problems.append(f"pipeline.{name}.{what}_request {request} is above the limit {limit}")
        except ValueError as exc:
            problems.append(f"pipeline.{name}: {exc}")
    return problems
