"""MNIST-1D with the paper's CNN: three Conv1d (25 channels; kernels 5, 3, 3; stride 2; padding 1),
ReLU, flatten 125 -> Linear 10."""

from torch import nn

from tuner.objectives import Dataset, Objective, mnist1d


class CNN(nn.Module):
    def __init__(self, channels: int = 25, n_out: int = 10, dropout: float = 0.0) -> None:
        super().__init__()
        self.conv1 = nn.Conv1d(1, channels, 5, stride=2, padding=1)
        self.conv2 = nn.Conv1d(channels, channels, 3, stride=2, padding=1)
        self.conv3 = nn.Conv1d(channels, channels, 3, stride=2, padding=1)
        self.drop = nn.Dropout(dropout)
        self.fc = nn.Linear(channels * 5, n_out)

    def forward(self, x):
        x = x.unsqueeze(1)
        x = self.conv1(x).relu()
        x = self.conv2(x).relu()
        x = self.conv3(x).relu()
        return self.fc(self.drop(x.flatten(1)))


def build_model(data: Dataset) -> nn.Module:
    return CNN(25, data.n_classes)


objective = Objective(
    "mnist1d-cnn", load_data=mnist1d, build_model=build_model, metric="accuracy",
    description="MNIST-1D (4000 train / 1000 test), the paper's 3-layer CNN; published test accuracy 94%",
)
