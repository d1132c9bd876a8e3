from candor.common.v1 import common_pb2 as _common_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class DetectRequest(_message.Message):
    __slots__ = ("image", "include_chips")
    IMAGE_FIELD_NUMBER: _ClassVar[int]
    INCLUDE_CHIPS_FIELD_NUMBER: _ClassVar[int]
    image: bytes
    include_chips: bool
    def __init__(self, image: _Optional[bytes] = ..., include_chips: _Optional[bool] = ...) -> None: ...

class DetectResponse(_message.Message):
    __slots__ = ("faces", "image_width", "image_height", "image_sha256")
    FACES_FIELD_NUMBER: _ClassVar[int]
    IMAGE_WIDTH_FIELD_NUMBER: _ClassVar[int]
    IMAGE_HEIGHT_FIELD_NUMBER: _ClassVar[int]
    IMAGE_SHA256_FIELD_NUMBER: _ClassVar[int]
    faces: _containers.RepeatedCompositeFieldContainer[_common_pb2.DetectedFace]
    image_width: int
    image_height: int
    image_sha256: str
    def __init__(self, faces: _Optional[_Iterable[_Union[_common_pb2.DetectedFace, _Mapping]]] = ..., image_width: _Optional[int] = ..., image_height: _Optional[int] = ..., image_sha256: _Optional[str] = ...) -> None: ...
