"""Make data/pretrained/mnist_cnn_small_conv.pth, the weights specs/mnist_cnn_finetune.yaml starts from.

Run from the repo root:  python data/make_pretrained.py

Trains specs/mnist_cnn_small.yaml for one epoch on the shipped MNIST sample (seeded: the same file every time on
one machine and torch version) and saves the state dict of its convolutions (`conv1.*`) alone, as
``torch.save`` writes a torchvision weights file. The fine-tuning spec loads it with `strict: false`: the dense
layers are not in the file and keep their initialisation, which the load reports.
"""

import os

import torch

import compiler

OUT = "data/pretrained/mnist_cnn_small_conv.pth"


def main() -> None:
    model, loss_fn, optimizer, _, loader, _ = compiler.build_training(
        compiler.load_spec("specs/mnist_cnn_small.yaml"), "cpu"
    )
    model.train()
    for x, y in loader:
        loss = loss_fn(model(x), y)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    convolutions = {key: value for key, value in model.state_dict().items() if key.startswith("conv1.")}
    os.makedirs(os.path.dirname(OUT), exist_ok=True)
    torch.save(convolutions, OUT)
    print(f"wrote {OUT}: {', '.join(convolutions)} (last training loss {loss.item():.4f})")


if __name__ == "__main__":
    main()
