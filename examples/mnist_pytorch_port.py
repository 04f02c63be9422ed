"""The official PyTorch MNIST example (github.com/pytorch/examples, mnist/main.py), ported to
tinygrad_bn with as few changes as we could: the same network, training loop, test loop, flags
and defaults. docs/nn.md, "Porting a PyTorch script: the MNIST example", lists every line that
differs and why.

    python -m examples.mnist_pytorch_port                       # embedded digits, no files
    python -m examples.mnist_pytorch_port --data-dir ~/data     # local MNIST IDX files

Without --data-dir it trains on data that ships with the project's dependencies: scikit-learn's
1,797 real handwritten 8x8 digits (tinygrad_bn.data.Digits: 1,438 train / 359 test), each
resized to 20x20 and centred in a 28x28 frame, the layout of MNIST's digits, so the network
(fc1 = Linear(9216, 128)) is unchanged. Nothing is ever downloaded.
"""
import argparse
import numpy as np
from tqdm import tqdm
import tinygrad_bn as tg
import tinygrad_bn.nn as nn
import tinygrad_bn.nn.functional as F
import tinygrad_bn.optim as optim
from tinygrad_bn.data import datasets, transforms
from tinygrad_bn.optim.lr_scheduler import StepLR


class Net(nn.Module):
    def __init__(self):
        super(Net, self).__init__()
        self.conv1 = nn.Conv2d(1, 32, 3, 1)
        self.conv2 = nn.Conv2d(32, 64, 3, 1)
        self.dropout1 = nn.Dropout(0.25)
        self.dropout2 = nn.Dropout(0.5)
        self.fc1 = nn.Linear(9216, 128)
        self.fc2 = nn.Linear(128, 10)

    def forward(self, x):
        x = self.conv1(x)
        x = F.relu(x)
        x = self.conv2(x)
        x = F.relu(x)
        x = F.max_pool2d(x, 2)
        x = self.dropout1(x)
        x = tg.flatten(x, 1)
        x = self.fc1(x)
        x = F.relu(x)
        x = self.dropout2(x)
        x = self.fc2(x)
        output = F.log_softmax(x, dim=1)
        return output


def train(args, model, device, train_loader, optimizer, epoch):
    model.train()
    for batch_idx, (data, target) in enumerate(tqdm(train_loader, desc=f'Epoch {epoch}')):
        data, target = data.to(device), target.to(device)
        optimizer.zero_grad()
        output = model(data)
        loss = F.nll_loss(output, target)
        loss.backward()
        optimizer.step()
        if batch_idx % args.log_interval == 0:
            tqdm.write('Train Epoch: {} [{}/{} ({:.0f}%)]\tLoss: {:.6f}'.format(
                epoch, batch_idx * len(data), len(train_loader.dataset),
                100. * batch_idx / len(train_loader), loss.item()))
            if args.dry_run:
                break


def test(model, device, test_loader):
    model.eval()
    test_loss = 0
    correct = 0
    with tg.no_grad():
        for data, target in test_loader:
            data, target = data.to(device), target.to(device)
            output = model(data)
            test_loss += F.nll_loss(output, target, reduction='sum').item()  # sum up batch loss
            pred = output.argmax(dim=1, keepdim=True)  # get the index of the max log-probability
            correct += pred.eq(target.view_as(pred)).sum().item()

    test_loss /= len(test_loader.dataset)

    print('\nTest set: Average loss: {:.4f}, Accuracy: {}/{} ({:.0f}%)\n'.format(
        test_loss, correct, len(test_loader.dataset),
        100. * correct / len(test_loader.dataset)))


# ---- the embedded stand-in for MNIST (not in the original) ----------------------------------
MNIST_SIDE, MNIST_BOX = 28, 20  # MNIST centres each digit, fitted into a 20x20 box, in 28x28


def bilinear_matrix(n_in, n_out):
    """The (n_out, n_in) matrix of 1-D linear resampling with half-pixel centres, the rule of
    F.interpolate(mode='bilinear', align_corners=False); a 2-D resize is M @ image @ M.T."""
    src = np.clip((np.arange(n_out) + 0.5) * n_in / n_out - 0.5, 0, n_in - 1)
    lo = np.floor(src).astype(np.int64)
    hi = np.minimum(lo + 1, n_in - 1)
    weight = src - lo
    m = np.zeros((n_out, n_in))
    np.add.at(m, (np.arange(n_out), lo), 1 - weight)
    np.add.at(m, (np.arange(n_out), hi), weight)
    return m


def embedded_digits(train=True):
    """scikit-learn's 8x8 digits (tinygrad_bn.data.Digits) laid out as MNIST: resized to 20x20
    and centred in 28x28, float32 (N, 1, 28, 28) in [0, 1]."""
    digits = datasets.Digits(train=train)
    m = bilinear_matrix(digits.data.shape[-1], MNIST_BOX)
    boxes = np.einsum('ai,nij,bj->nab', m, digits.data[:, 0].astype(np.float64), m)
    margin = (MNIST_SIDE - MNIST_BOX) // 2
    images = np.zeros((len(digits), 1, MNIST_SIDE, MNIST_SIDE), np.float32)
    images[:, 0, margin:margin + MNIST_BOX, margin:margin + MNIST_BOX] = boxes
    dataset = datasets.ImageDataset(images, digits.targets)
    dataset.classes = digits.classes
    return dataset


def main(argv=None):
    # Training settings
    parser = argparse.ArgumentParser(description='tinygrad_bn port of the PyTorch MNIST Example')
    parser.add_argument('--batch-size', type=int, default=64, metavar='N',
                        help='input batch size for training (default: 64)')
    parser.add_argument('--test-batch-size', type=int, default=1000, metavar='N',
                        help='input batch size for testing (default: 1000)')
    parser.add_argument('--epochs', type=int, default=14, metavar='N',
                        help='number of epochs to train (default: 14)')
    parser.add_argument('--lr', type=float, default=1.0, metavar='LR',
                        help='learning rate (default: 1.0)')
    parser.add_argument('--gamma', type=float, default=0.7, metavar='M',
                        help='Learning rate step gamma (default: 0.7)')
    parser.add_argument('--no-accel', action='store_true',
                        help='disables accelerator')
    parser.add_argument('--dry-run', action='store_true',
                        help='quickly check a single pass')
    parser.add_argument('--seed', type=int, default=1, metavar='S',
                        help='random seed (default: 1)')
    parser.add_argument('--log-interval', type=int, default=10, metavar='N',
                        help='how many batches to wait before logging training status')
    parser.add_argument('--save-model', action='store_true',
                        help='For Saving the current Model')
    parser.add_argument('--data-dir', default=None, metavar='DIR',
                        help='folder with the MNIST IDX files (never downloaded) (default: the '
                             'embedded digits, resized to MNIST\'s 28x28 layout)')
    args = parser.parse_args(argv)

    use_accel = not args.no_accel and tg.accelerator.is_available()

    tg.manual_seed(args.seed)

    if use_accel:
        device = tg.accelerator.current_accelerator()
    else:
        device = tg.device("cpu")

    train_kwargs = {'batch_size': args.batch_size}
    test_kwargs = {'batch_size': args.test_batch_size}
    if use_accel:
        accel_kwargs = {'shuffle': True}
        train_kwargs.update(accel_kwargs)
        test_kwargs.update(accel_kwargs)

    transform=transforms.Compose([
        transforms.Normalize((0.1307,), (0.3081,))
        ])
    if args.data_dir is not None:
        try:
            dataset1 = datasets.MNIST(args.data_dir, train=True)
            dataset2 = datasets.MNIST(args.data_dir, train=False)
        except (OSError, ValueError) as e:  # missing, unreadable or corrupt files
            parser.error(f'--data-dir: {e}')
    else:
        dataset1 = embedded_digits(train=True)
        dataset2 = embedded_digits(train=False)
    train_loader = tg.data.DataLoader(dataset1, transform=transform, **train_kwargs)
    test_loader = tg.data.DataLoader(dataset2, transform=transform, **test_kwargs)

    model = Net().to(device)
    optimizer = optim.Adadelta(model.parameters(), lr=args.lr)

    scheduler = StepLR(optimizer, step_size=1, gamma=args.gamma)
    for epoch in range(1, args.epochs + 1):
        train(args, model, device, train_loader, optimizer, epoch)
        test(model, device, test_loader)
        scheduler.step()

    if args.save_model:
        tg.save(model.state_dict(), "mnist_cnn.npz")


if __name__ == '__main__':
    main()
