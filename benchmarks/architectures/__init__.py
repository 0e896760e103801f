"""Published CNN architectures as plain torch.nn modules (no torchvision, no weights), written
from their papers' definitions: the source of the benchmark census and of the model rows.

ARCHITECTURES maps a name to (builder, input height/width); every builder takes num_classes."""
from .classic import alexnet, alexnet_two_tower, vgg16
from .convnext import convnext_tiny
from .dense import densenet121, squeezenet1_1
from .inception import googlenet, inception_v3
from .mobile import (efficientnet_b0, mobilenet_v2, mobilenet_v3_large, mobilenet_v3_small,
                     shufflenet_v2_x1_0)
from .resnet import regnet_y_400mf, resnet18, resnet50, resnext50_32x4d

ARCHITECTURES = {
    "resnet18": (resnet18, 224),
    "resnet50": (resnet50, 224),
    "resnext50_32x4d": (resnext50_32x4d, 224),
    "regnet_y_400mf": (regnet_y_400mf, 224),
    "vgg16": (vgg16, 224),
    "alexnet": (alexnet, 224),
    "alexnet_two_tower": (alexnet_two_tower, 224),
    "inception_v3": (inception_v3, 299),
    "googlenet": (googlenet, 224),
    "densenet121": (densenet121, 224),
    "squeezenet1_1": (squeezenet1_1, 224),
    "shufflenet_v2_x1_0": (shufflenet_v2_x1_0, 224),
    "mobilenet_v2": (mobilenet_v2, 224),
    "mobilenet_v3_small": (mobilenet_v3_small, 224),
    "mobilenet_v3_large": (mobilenet_v3_large, 224),
    "efficientnet_b0": (efficientnet_b0, 224),
    "convnext_tiny": (convnext_tiny, 224),
}
