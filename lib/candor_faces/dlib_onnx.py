"""dlib's face ResNet converted to ONNX by reading dlib's own model file, run on onnxruntime.

dlib-bin is built without BLAS, so its ResNet takes 70-160 ms per face on a small CPU. The same
network with the same weights on onnxruntime gives the same vectors many times faster, so
galleries and thresholds made with dlib stay valid. Nothing is downloaded: the weights are read
from ``dlib_face_recognition_resnet_model_v1.dat`` (the face_recognition_models package) at start,
in well under a second.

The network (dlib's ``dnn_face_recognition_ex.cpp``), input to output::

    input_rgb_image_sized<150>: (pixel - channel mean) / 256
    con 32 7x7/2, affine, relu, max_pool 3x3/2
    3 x res(32); res_down(64), 3 x res(64); res_down(128), 2 x res(128);
    res_down(256), 2 x res(256); res_down(256)
    avg_pool_everything, fc_no_bias 128

    res(N):      relu(block(x, stride 1) + x)
    res_down(N): relu(block(x, stride 2) + avg_pool 2x2/2 (x))
    block:       con N 3x3/stride, affine, relu, con N 3x3/1, affine

dlib's add_prev adds tensors of different shapes into the larger shape, with zeros where one side
has no value: where the pooled shortcut of a res_down is larger than the strided block's output,
the block's output is padded at the bottom and right, and the shortcut's missing channels are zero.

dlib's file format (``serialize`` in dlib/dnn): integers are a length byte (0x80 marks a
negative) followed by little-endian bytes; strings are a length then bytes; a tensor is a version
(2), four dimensions, then raw float32s; a layer is its version string and its fields. Layers are
written input first, so the parameter-carrying ones (``con_4``, ``affine_``, ``fc_2``) appear in
the order of the list above.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from candor_kit.errors import ConfigError

#: res_down and res blocks after the stem: (channels, downsampling first, blocks).
LEVELS = ((32, False, 3), (64, True, 4), (128, True, 3), (256, True, 3), (256, True, 1))
CHIP = 150
#: A layer's name as dlib writes it: length byte, then the name.
_LAYER = re.compile(rb"\x01[\x04-\x16](con_4|affine_|fc_2|input_rgb_image_sized)")


class DlibFileReader:
    """Reads dlib's serialised values from a byte string, from a position."""

    def __init__(self, data: bytes, position: int) -> None:
        self._data = data
        self.position = position

    def integer(self) -> int:
        """One of dlib's variable-length integers."""
        head = self._data[self.position]
        size = head & 0x0F
        start = self.position + 1
        value = int.from_bytes(self._data[start : start + size], "little")
        self.position = start + size
        return -value if head & 0x80 else value

    def real(self) -> float:
        """A float written as dlib's (mantissa, exponent) pair of integers."""
        mantissa = self.integer()
        return mantissa * 2.0 ** self.integer()

    def string(self) -> str:
        """A length-prefixed string."""
        size = self.integer()
        text = self._data[self.position : self.position + size]
        self.position += size
        return text.decode("ascii")

    def tensor(self) -> np.ndarray:
        """A tensor: version 2, four dimensions, raw little-endian float32s (returned flat)."""
        version = self.integer()
        if version != 2:
            raise ConfigError(f"dlib tensor version {version} at byte {self.position}; expected 2")
        count = int(np.prod([self.integer() for _ in range(4)]))
        values = np.frombuffer(self._data, dtype="<f4", count=count, offset=self.position).astype(np.float32)
        self.position += 4 * count
        return values


@dataclass(frozen=True)
class Conv:
    """A convolution's weights (OIHW), bias and geometry."""

    weight: np.ndarray
    bias: np.ndarray
    stride: int
    padding: int


@dataclass(frozen=True)
class DlibResNet:
    """The weights of dlib's face ResNet, in network order."""

    means: tuple[float, float, float]
    convs: list[Conv]
    #: Per-channel (gamma, beta) of each affine layer, one after each convolution.
    affines: list[tuple[np.ndarray, np.ndarray]]
    fc: np.ndarray  # (256, 128)


def read_dlib_resnet(model_file: Path) -> DlibResNet:
    """Parse ``dlib_face_recognition_resnet_model_v1.dat``."""
    data = model_file.read_bytes()
    means: tuple[float, float, float] | None = None
    convs: list[Conv] = []
    affines: list[tuple[np.ndarray, np.ndarray]] = []
    fc: np.ndarray | None = None
    for name, reader in _layers(data):
        if name == "input_rgb_image_sized":
            means = (reader.real(), reader.real(), reader.real())
        elif name == "con_4":
            params = reader.tensor()
            filters, rows, columns, stride_y, stride_x, pad_y, pad_x = (reader.integer() for _ in range(7))
            if rows != columns or stride_y != stride_x or pad_y != pad_x:
                raise ConfigError(f"unexpected convolution geometry {rows}x{columns}/{stride_y}/{pad_y}")
            channels = (params.size - filters) // (filters * rows * columns)
            weight = params[: filters * channels * rows * columns].reshape(filters, channels, rows, columns)
            convs.append(Conv(weight, params[-filters:], stride_y, pad_y))
        elif name == "affine_":
            params = reader.tensor()
            half = params.size // 2
            affines.append((params[:half], params[half:]))
        else:  # fc_2: outputs, inputs, then the weight tensor
            outputs, inputs = reader.integer(), reader.integer()
            fc = reader.tensor().reshape(inputs, outputs)
    expected = 1 + 2 * sum(blocks for _, _, blocks in LEVELS)
    if means is None or fc is None or len(convs) != expected or len(affines) != expected:
        raise ConfigError(
            f"{model_file.name} is not dlib's face ResNet ({len(convs)} convolutions, {expected} expected)"
        )
    return DlibResNet(means, convs, affines, fc)


def _layers(data: bytes) -> Iterator[tuple[str, DlibFileReader]]:
    """Each parameter-carrying layer's name and a reader placed after it, in file order.

    The scan skips raw tensor data it has read, so bytes inside weights are never taken for names.
    """
    position = 0
    while (found := _LAYER.search(data, position)) is not None:
        reader = DlibFileReader(data, found.end())
        yield found.group(1).decode("ascii"), reader
        position = reader.position


def to_onnx(net: DlibResNet) -> bytes:
    """The network as an ONNX model: uint8 RGB chips [N, 150, 150, 3] in, [N, 128] float out."""
    from onnx import TensorProto, helper, numpy_helper

    nodes: list[object] = []
    weights: list[object] = []
    counter = iter(range(10_000))

    def constant(array: np.ndarray, name: str) -> str:
        weights.append(numpy_helper.from_array(array, name))
        return name

    def node(op: str, inputs: list[str], **attributes: object) -> str:
        out = f"{op.lower()}{next(counter)}"
        nodes.append(helper.make_node(op, inputs, [out], **attributes))
        return out

    layers = iter(zip(net.convs, net.affines, strict=True))

    def conv_affine(x: str) -> tuple[str, Conv]:
        conv, (gamma, beta) = next(layers)
        # The affine layer folds into the convolution: gamma * (w * x + b) + beta.
        index = next(counter)
        weight = constant(conv.weight * gamma[:, None, None, None], f"w{index}")
        bias = constant(conv.bias * gamma + beta, f"b{index}")
        out = node("Conv", [x, weight, bias], strides=[conv.stride] * 2, pads=[conv.padding] * 4)
        return out, conv

    means = constant(np.array(net.means, np.float32).reshape(1, 3, 1, 1), "means")
    scale = constant(np.array(1 / 256, np.float32), "scale")
    x = node("Cast", ["chips"], to=TensorProto.FLOAT)
    x = node("Transpose", [x], perm=[0, 3, 1, 2])
    x, stem = conv_affine(node("Mul", [node("Sub", [x, means]), scale]))
    x = node("MaxPool", [node("Relu", [x])], kernel_shape=[3, 3], strides=[2, 2])
    size, channels = _after_pool(_after_conv(CHIP, stem), 3, 2), stem.weight.shape[0]
    for width, downsample, blocks in LEVELS:
        for block in range(blocks):
            main, first = conv_affine(x)
            main, _ = conv_affine(node("Relu", [main]))
            shortcut = x
            if downsample and block == 0:
                shortcut = node("AveragePool", [x], kernel_shape=[2, 2], strides=[2, 2])
                strided, pooled = _after_conv(size, first), _after_pool(size, 2, 2)
                if pooled > strided:  # dlib adds into the larger shape, zeros where a side has none
                    pads = np.array([0, 0, 0, 0, 0, 0, pooled - strided, pooled - strided], np.int64)
                    main = node("Pad", [main, constant(pads, f"pads{next(counter)}")])
                size = max(strided, pooled)
                if width > channels:  # and its missing channels are zero
                    pads = np.array([0, 0, 0, 0, 0, width - channels, 0, 0], np.int64)
                    shortcut = node("Pad", [shortcut, constant(pads, f"pads{next(counter)}")])
                channels = width
            x = node("Relu", [node("Add", [main, shortcut])])
    x = node("Flatten", [node("GlobalAveragePool", [x])], axis=1)
    out = node("MatMul", [x, constant(net.fc.astype(np.float32), "fc")])
    nodes.append(helper.make_node("Identity", [out], ["descriptor"]))
    graph = helper.make_graph(
        nodes,  # type: ignore[arg-type]
        "dlib-face-resnet-v1",
        [helper.make_tensor_value_info("chips", TensorProto.UINT8, ["N", CHIP, CHIP, 3])],
        [helper.make_tensor_value_info("descriptor", TensorProto.FLOAT, ["N", 128])],
        weights,  # type: ignore[arg-type]
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], producer_name="candor")
    model.ir_version = 8
    return model.SerializeToString()


def _after_conv(size: int, conv: Conv) -> int:
    return (size + 2 * conv.padding - conv.weight.shape[2]) // conv.stride + 1


def _after_pool(size: int, kernel: int, stride: int) -> int:
    return (size - kernel) // stride + 1
