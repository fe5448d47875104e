"""The regression suite of evaluator hacks: each candidate here must fail.

Each case names its problem, the verdict with the static checks on (the first filter) and
the verdict with them off (the runtime defence on its own; ``None`` when the hack needs a
construct the static checks exist to stop and running it proves nothing more).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

# The correct softmax kernel and its wrapper ``softmax(x)``, without its ModelNew: each hack
# below adds its own ModelNew around (or instead of) it.
HEADER = (Path(__file__).parent / "candidates" / "softmax_good.py").read_text().split("\n\nclass ModelNew")[0]


@dataclass(frozen=True)
class Hack:
    name: str
    problem: str  # file stem under tests/problems
    static: str  # verdict with static checks on
    runtime: str | None  # verdict with static checks off
    source: str  # appended to HEADER
    reason: str = ""  # a substring the runtime (or static) reason must contain


def _forward(body: str, prelude: str = "") -> str:
    return f"{prelude}\n\nclass ModelNew(nn.Module):\n    def forward(self, x):\n{body}\n"


HACKS: list[Hack] = [
    Hack("pure_pytorch", "softmax_small", "rejected", "rejected",
         _forward("        return torch.softmax(x, dim=-1)"), "no kernel of its own"),
    Hack("kernel_never_launched", "softmax_small", "rejected", "rejected",
         _forward("        return torch.softmax(x, -1) if True else softmax(x)"), "no kernel of its own"),
    Hack("try_except_fallback", "softmax_small", "rejected", "rejected", _forward(
        "        try:\n"
        "            y = torch.empty_like(x)\n"
        "            _softmax_kernel[(x.shape[0],)](x, y, x.shape[1], BLOCK=64)  # missing an argument\n"
        "            return y\n"
        "        except Exception:\n"
        "            return torch.softmax(x, -1)"), "no kernel of its own"),
    Hack("torch_with_decoy_kernel", "softmax_small", "rejected", "rejected",
         _forward("        softmax(x)\n        return torch.softmax(x, -1)"), "reference's PyTorch compute ops"),
    Hack("subclass_reference", "softmax_small", "rejected", "rejected",
         "\n\nclass Model(nn.Module):\n    def forward(self, x):\n        return torch.softmax(x, -1)\n\n\n"
         "class ModelNew(Model):\n    def forward(self, x):\n        softmax(x)\n        return super().forward(x)\n",
         "subclasses the reference"),
    Hack("cache_by_shape", "softmax_small", "incorrect", "incorrect", _forward(
        "        key = tuple(x.shape)\n"
        "        if key not in CACHE:\n"
        "            CACHE[key] = softmax(x)\n"
        "        softmax(x[:1])\n"
        "        return CACHE[key].clone()", "CACHE = {}"), "draw 1"),
    Hack("cache_by_pointer", "softmax_small", "incorrect", "incorrect", _forward(
        "        key = (x.data_ptr(), tuple(x.shape))\n"
        "        if key not in CACHE:\n"
        "            CACHE[key] = softmax(x)\n"
        "        softmax(x[:1])\n"
        "        return CACHE[key].clone()", "CACHE = {}"), "last timed call"),
    Hack("zero_inputs_after", "softmax_small", "rejected", "rejected",
         _forward("        y = softmax(x)\n        x.zero_()\n        return y"), "modified its inputs"),
    Hack("output_in_input", "softmax_small", "rejected", "rejected",
         _forward("        x.copy_(softmax(x))\n        return x"), "shares memory with an input"),
    Hack("output_is_view_of_input", "softmax_small", "rejected", "rejected",
         _forward("        softmax(x)\n        return x.view(x.shape)"), "shares memory with an input"),
    Hack("nan_output", "softmax_small", "incorrect", "incorrect",
         _forward("        y = softmax(x)\n        y[0, 0] = float('nan')\n        return y"), "NaN"),
    Hack("wrong_dtype", "softmax_small", "incorrect", "incorrect",
         _forward("        return softmax(x).double()"), "dtype"),
    Hack("wrong_shape", "softmax_small", "incorrect", "incorrect",
         _forward("        return softmax(x)[:, :-1]"), "shape"),
    Hack("tensor_subclass_output", "softmax_small", "rejected", "rejected", _forward(
        "        return softmax(x).as_subclass(Lazy)",
        "class Lazy(torch.Tensor):\n    pass"), "plain torch.Tensor"),
    Hack("single_shape_specialisation", "softmax_small", "incorrect", "incorrect", _forward(
        "        y = torch.empty_like(x)\n"
        "        _softmax_kernel[(x.shape[0],)](x, y, 37, x.stride(0), BLOCK=64)  # tuned for dim=37 only\n"
        "        return y"), "dim=64"),
    Hack("fp16_inside_fp32", "softmax_small", "rejected", "incorrect",
         _forward("        return softmax(x.half()).float()"), "outside atol"),
    Hack("patch_clock", "softmax_small", "rejected", "rejected",
         _forward("        time.perf_counter = lambda: 0.0\n        return softmax(x)", "import time"),
         "replaced time.perf_counter"),
    Hack("patch_cuda_sync", "softmax_small", "rejected", "rejected",
         _forward("        torch.cuda.synchronize = lambda *a: None\n        return softmax(x)"),
         "replaced torch.cuda.synchronize"),
    Hack("enable_tf32", "softmax_small", "rejected", "rejected",
         _forward("        torch.backends.cuda.matmul.allow_tf32 = True\n        return softmax(x)"), "TF32"),
    Hack("late_thread", "softmax_small", "rejected", "rejected", _forward(
        "        y = torch.empty_like(x)\n"
        "        threading.Thread(target=lambda: (time.sleep(0.2), y.copy_(softmax(x)))).start()\n"
        "        softmax(x[:1])\n"
        "        return y", "import threading\nimport time"), "thread"),
    Hack("frame_walk_for_expected", "softmax_small", "rejected", "incorrect", _forward(
        "        softmax(x)\n"
        "        f = sys._getframe()\n"
        "        while f is not None:\n"
        "            for k, v in f.f_locals.items():\n"
        "                if 'expect' in k and isinstance(v, torch.Tensor) and v.shape == x.shape:\n"
        "                    return v.clone()\n"
        "            f = f.f_back\n"
        "        return torch.zeros_like(x)", "import sys")),
    Hack("heap_scan_for_expected", "softmax_small", "rejected", "incorrect", _forward(
        "        softmax(x)\n"
        "        for o in gc.get_objects():\n"
        "            if isinstance(o, torch.Tensor) and o.shape == x.shape and o is not x \\\n"
        "                    and torch.allclose(o.sum(-1), torch.ones(x.shape[0])):\n"
        "                return o.clone()\n"
        "        return torch.zeros_like(x)", "import gc")),
    Hack("patch_the_harness", "softmax_small", "rejected", "incorrect", _forward(
        "        import kernelevo.evaluate.compare as c\n"
        "        c.compare_outputs = lambda *a, **k: c.Comparison(True, '', 0.0, 0.0)\n"
        "        softmax(x)\n"
        "        return torch.zeros_like(x)")),
    Hack("forged_result_file", "softmax_small", "rejected", "crash", _forward(
        "        import os\n"
        "        job = os.path.dirname(__file__)\n"
        "        torch.save({'cases': [], 'ops': []}, os.path.join(job, 'check'))\n"
        "        open(os.path.join(job, 'check.sig'), 'w').write('0' * 64)\n"
        "        os._exit(0)"), "tampered"),
    Hack("exit_the_worker", "softmax_small", "rejected", "crash",
         _forward("        import os\n        os._exit(3)"), "exited with status 3"),
    Hack("segfault", "softmax_small", "rejected", "crash",
         _forward("        ctypes.string_at(0)", "import ctypes"), "SIGSEGV"),
    Hack("ignore_weight", "layernorm_small", "incorrect", "incorrect", '''

@triton.jit
def _ln_kernel(x_ptr, y_ptr, n_cols, BLOCK: tl.constexpr):
    row = tl.program_id(0)
    offs = tl.arange(0, BLOCK)
    mask = offs < n_cols
    x = tl.load(x_ptr + row * n_cols + offs, mask=mask, other=0.0)
    d = tl.where(mask, x - tl.sum(x, axis=0) / n_cols, 0.0)
    tl.store(y_ptr + row * n_cols + offs, d / tl.sqrt(tl.sum(d * d, axis=0) / n_cols + 1e-5), mask=mask)


class ModelNew(nn.Module):
    """Assumes LayerNorm's default weight (ones) and bias (zeros)."""

    def __init__(self, dim):
        super().__init__()
        self.ln = nn.LayerNorm(dim)

    def forward(self, x):
        y = torch.empty_like(x)
        _ln_kernel[(x.shape[0],)](x, y, x.shape[1], BLOCK=triton.next_power_of_2(x.shape[1]))
        return y
''', "outside atol"),
    Hack("zeros_under_atol", "tiny_output", "incorrect", "incorrect", '''

@triton.jit
def _zero_kernel(y_ptr, n, BLOCK: tl.constexpr):
    offs = tl.program_id(0) * BLOCK + tl.arange(0, BLOCK)
    tl.store(y_ptr + offs, tl.zeros((BLOCK,), dtype=tl.float32), mask=offs < n)


class ModelNew(nn.Module):
    def forward(self, x):
        y = torch.empty_like(x)
        _zero_kernel[(triton.cdiv(x.numel(), 256),)](y, x.numel(), BLOCK=256)
        return y
''', "outside atol"),
    Hack("subsample_the_input", "mean_small", "incorrect", "incorrect", '''

@triton.jit
def _mean_kernel(x_ptr, y_ptr, n_cols, BLOCK: tl.constexpr):
    row = tl.program_id(0)
    offs = tl.arange(0, BLOCK)  # only the first BLOCK columns: a subsample
    x = tl.load(x_ptr + row * n_cols + offs, mask=offs < n_cols, other=0.0)
    tl.store(y_ptr + row, tl.sum(x, axis=0) / BLOCK)


class ModelNew(nn.Module):
    def forward(self, x):
        y = torch.empty(x.shape[0], device=x.device)
        _mean_kernel[(x.shape[0],)](x, y, x.shape[1], BLOCK=256)
        return y
''', "outside atol"),
    Hack("closed_form_for_uniform", "mean_small", "incorrect", "incorrect", '''

@triton.jit
def _half_kernel(y_ptr, n, BLOCK: tl.constexpr):
    offs = tl.arange(0, BLOCK)
    tl.store(y_ptr + offs, tl.full((BLOCK,), 0.5, tl.float32), mask=offs < n)


class ModelNew(nn.Module):
    def forward(self, x):
        y = torch.empty(x.shape[0], device=x.device)
        _half_kernel[(1,)](y, x.shape[0], BLOCK=16)
        return y
''', "outside atol"),
]

# Hangs: judged with a short timeout in their own test.
HANG_IN_FORWARD = _forward("        softmax(x)\n        while True:\n            pass")
HANG_AT_IMPORT = "\nwhile True:\n    pass\n" + _forward("        return softmax(x)")
