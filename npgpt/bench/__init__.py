"""npgpt bench: what this machine does on a GPT, for training and inference, beside PyTorch and
beside the machine's own limits (the command: npgpt/cli/bench.py; the page: docs/speed.md).

    workloads.py  the models (baby, small, gpt2) and npgpt's workloads: a training step, prefill,
                  decode
    peer.py       the same workloads in PyTorch: the fair twin's step, transformers' generate
    twin.py       the fair twin: npgpt's GPT as nanoGPT writes it in torch.nn, fused AdamW
    peak.py       the machine's roofs: numpy's best sgemm, a Numba triad (and a pure read)
    roofline.py   each workload's FLOPs and bytes, and the roof that bounds it
    machine.py    the CPU, its SIMD width, numpy's BLAS and its threads, the load average
    report.py     results, their statistics (mean ± std; the first call apart), md / csv / json
    worker.py     one side, one thread count, one process (python -m npgpt.bench.worker)
    runner.py     the driver: the workers in turn, one Report
    plot.py       the roofline picture

Nothing is imported here, so that the PyTorch side's processes load only what they use.
"""
