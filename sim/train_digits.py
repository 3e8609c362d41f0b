"""Train the demo's CNN on the digits' training split and export it to ONNX.

    pip install -e '.[train]'            # PyTorch 2.13 (CPU) and the ONNX exporter's needs
    python -m rowstation.sim.train_digits [-o sim/models/digits_cnn.onnx]

conv 3x3 (8) -> ReLU -> max pool 2 -> conv 3x3 (16) -> batch norm -> ReLU -> max pool 2 ->
flatten -> fully connected (10): about 24 k MACs an image. The result is committed, so the demo
needs neither torch nor training.
"""

import argparse

from .digits import MODEL, load_split


def build_model(torch):
    nn = torch.nn
    return nn.Sequential(
        nn.Conv2d(1, 8, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
        nn.Conv2d(8, 16, 3, padding=1, bias=False), nn.BatchNorm2d(16), nn.ReLU(), nn.MaxPool2d(2),
        nn.Flatten(), nn.Linear(64, 10))


def main(argv=None):
    import torch

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("-o", "--output", default=str(MODEL))
    parser.add_argument("--epochs", type=int, default=60)
    args = parser.parse_args(argv)
    torch.manual_seed(0)
    (x_train, y_train), (x_test, y_test) = load_split()
    model = build_model(torch)
    optimizer = torch.optim.Adam(model.parameters(), lr=3e-3, weight_decay=1e-4)
    x, y = torch.from_numpy(x_train), torch.from_numpy(y_train).long()
    for epoch in range(args.epochs):
        model.train()
        for batch in torch.randperm(len(x)).split(64):
            optimizer.zero_grad()
            loss = torch.nn.functional.cross_entropy(model(x[batch]), y[batch])
            loss.backward()
            optimizer.step()
    model.eval()
    with torch.no_grad():
        accuracy = float((model(torch.from_numpy(x_test)).argmax(1).numpy() == y_test).mean())
    print(f"held-out accuracy {accuracy:.2%} on {len(y_test)} images")
    torch.onnx.export(model, (torch.zeros(1, 1, 8, 8),), args.output, input_names=["image"],
                      output_names=["logits"], dynamic_axes={"image": {0: "batch"}, "logits": {0: "batch"}},
                      dynamo=False)
    print(args.output)


if __name__ == "__main__":
    main()
