"""Training throughput per stage on this CPU, and whether the data loader keeps up.

    python benchmarks/train_speed.py [--image-size 256] [--batch-size 8] [--steps 6] [--threads 2]

For each stage (the shipped demo recipes' networks): samples/s of forward+backward+step
(bf16 autocast where the CPU has it, else fp32), and samples/s of the data pipeline alone
(decode + augmentation + synthetic damage, one worker) on the bundled photos, or on
``--photos DIR`` when given.
"""
from __future__ import annotations

import argparse
import time

import torch
from hydra import compose, initialize_config_dir
from hydra.utils import instantiate

from pipeline.device import autocast, cpu_has_bf16
from pipeline.train import CONF_DIR


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--image-size", type=int, default=256)
    ap.add_argument("--batch-size", type=int, default=8)
    ap.add_argument("--steps", type=int, default=6)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--photos", default=None, help="a folder of photos for the loader timing")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    precision = "bf16" if cpu_has_bf16() else "fp32"
    print(f"{args.threads} threads, precision {precision}, {args.image_size} px, batch {args.batch_size}")
    for exp in ("demo_mask", "demo_inpaint", "demo_colorize"):
        data_over = ["data=photos", f"data.root={args.photos}"] if args.photos else ["data=samples"]
        with initialize_config_dir(config_dir=CONF_DIR, version_base="1.3"):
            cfg = compose("train", overrides=[f"experiment={exp}", *data_over,
                                              f"trainer.image_size={args.image_size}"])
        stage = instantiate(cfg.model).to(memory_format=torch.channels_last).train()
        data = instantiate(cfg.data).train
        t = time.perf_counter()
        items = [data[i % len(data)] for i in range(args.batch_size * 2)]
        loader_sps = len(items) / (time.perf_counter() - t)
        batch = {k: torch.stack([it[k] for it in items[:args.batch_size]]).contiguous(
            memory_format=torch.channels_last) for k in items[0]}
        stage.prepare([batch], 1)
        opt = torch.optim.AdamW(stage.parameters(), 1e-3)
        for i in range(args.steps + 1):
            if i == 1:
                t = time.perf_counter()
            with autocast(torch.device("cpu"), precision):
                loss = stage.loss(batch)["loss"]
            opt.zero_grad()
            loss.backward()
            opt.step()
        sps = args.batch_size * args.steps / (time.perf_counter() - t)
        verdict = "loader keeps up" if loader_sps > sps else "LOADER-BOUND: raise trainer.num_workers"
        print(f"{cfg.stage:9s} train {sps:6.1f} samples/s | data loader (1 worker) {loader_sps:6.1f} samples/s"
              f" -> {verdict}", flush=True)


if __name__ == "__main__":
    main()
