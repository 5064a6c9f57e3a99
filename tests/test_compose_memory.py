"""Writing a composed adapter forms no dense d_out x d_in matrix: peak memory stays near the adapters' size."""

import subprocess
import sys
import textwrap


def test_compose_peak_memory_is_a_small_multiple_of_the_adapters(tmp_path):
    script = textwrap.dedent(f"""
        import resource, torch
        from pathlib import Path
        from loradb.lora.compose import compose_exact
        from loradb.lora.export import write_composed_adapter
        from loradb.lora.base import BaseModel

        d, r, k, n_modules = 8192, 4, 3, 4
        g = torch.Generator().manual_seed(0)
        adapters = [{{f"layers.{{m}}.proj": (torch.randn(r, d, generator=g), torch.randn(d, r, generator=g), 2.0)
                      for m in range(n_modules)}} for _ in range(k)]
        adapter_bytes = sum(A.nbytes + B.nbytes for a in adapters for A, B, _ in a.values())
        base = BaseModel(path=Path("/nonexistent"), fingerprint="0" * 64, config={{}}, weight_shapes={{}}, tokenizer_hash="")
        before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
        composed = compose_exact(adapters, [0.5, -0.25, 0.75])
        write_composed_adapter(Path({str(tmp_path / "out")!r}), composed, fan_in_fan_out=False, base=base,
                               task_type=None, provenance={{}})
        after = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
        print(adapter_bytes, after - before, d * d * 4)
    """)
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=True).stdout.split()
    adapter_bytes, growth, one_dense = map(int, out)
    # one dense 8192 x 8192 float32 delta would be 256 MiB; the adapters are ~3 MiB in all
    assert growth < 8 * adapter_bytes + 16 * 2**20, (growth, adapter_bytes)
    assert growth < one_dense / 4
