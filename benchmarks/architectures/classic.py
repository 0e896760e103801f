"""The plain feed-forward classics: AlexNet (torchvision's single-tower variant, and the
original two-tower network of Krizhevsky et al. 2012 with its grouped convs) and VGG-16
(Simonyan & Zisserman 2014, configuration D)."""
from torch import nn


def _classifier(c_in, num_classes):
    return [nn.Dropout(0.5), nn.Linear(c_in, 4096), nn.ReLU(inplace=True),
            nn.Dropout(0.5), nn.Linear(4096, 4096), nn.ReLU(inplace=True),
            nn.Linear(4096, num_classes)]


def alexnet(num_classes=1000):
    """The single-tower AlexNet of "One weird trick" (Krizhevsky 2014), as torchvision ships
    it: 64, 192, 384, 256, 256 channels."""
    return nn.Sequential(
        nn.Conv2d(3, 64, 11, 4, 2), nn.ReLU(inplace=True), nn.MaxPool2d(3, 2),
        nn.Conv2d(64, 192, 5, padding=2), nn.ReLU(inplace=True), nn.MaxPool2d(3, 2),
        nn.Conv2d(192, 384, 3, padding=1), nn.ReLU(inplace=True),
        nn.Conv2d(384, 256, 3, padding=1), nn.ReLU(inplace=True),
        nn.Conv2d(256, 256, 3, padding=1), nn.ReLU(inplace=True), nn.MaxPool2d(3, 2),
        nn.AdaptiveAvgPool2d(6), nn.Flatten(), *_classifier(256 * 36, num_classes))


def alexnet_two_tower(num_classes=1000):
    """The 2012 AlexNet: 96, 256, 384, 384, 256 channels; conv2, conv4 and conv5 split into
    two groups (one per GPU in the paper), local response normalisation after conv1, conv2."""
    lrn = lambda: nn.LocalResponseNorm(5, alpha=1e-4, beta=0.75, k=2.0)
    return nn.Sequential(
        nn.Conv2d(3, 96, 11, 4, 2), nn.ReLU(inplace=True), lrn(), nn.MaxPool2d(3, 2),
        nn.Conv2d(96, 256, 5, padding=2, groups=2), nn.ReLU(inplace=True), lrn(), nn.MaxPool2d(3, 2),
        nn.Conv2d(256, 384, 3, padding=1), nn.ReLU(inplace=True),
        nn.Conv2d(384, 384, 3, padding=1, groups=2), nn.ReLU(inplace=True),
        nn.Conv2d(384, 256, 3, padding=1, groups=2), nn.ReLU(inplace=True), nn.MaxPool2d(3, 2),
        nn.Flatten(), *_classifier(256 * 36, num_classes))


VGG16_PLAN = [64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M",
              512, 512, 512, "M"]


def vgg16(num_classes=1000):
    """Thirteen 3x3 convs (with bias) in five stages, 2x2 max pools, three linears."""
    layers, c_in = [], 3
    for item in VGG16_PLAN:
        if item == "M":
            layers.append(nn.MaxPool2d(2, 2))
        else:
            layers += [nn.Conv2d(c_in, item, 3, padding=1), nn.ReLU(inplace=True)]
            c_in = item
    return nn.Sequential(*layers, nn.AdaptiveAvgPool2d(7), nn.Flatten(),
                         *_classifier(512 * 49, num_classes))
