"""Image/CompressedImage decoding: every supported encoding gives the same RGB; every malformed message is
a BadFrame whose text names the problem."""
import cv2
import numpy as np
import pytest
from sensor_msgs.msg import CompressedImage

from ovss_ros.ros.image_codec import BadFrame, array_to_image, compressed_to_rgb, image_to_rgb
from rostest_helpers import image_msg, raw_image, scene

RGB = scene(12, 16)


@pytest.mark.parametrize("encoding,pixels", [
    ("rgb8", RGB), ("bgr8", RGB[:, :, ::-1]), ("8UC3", RGB[:, :, ::-1]),
    ("rgba8", np.dstack([RGB, np.full(RGB.shape[:2], 7, np.uint8)])),
    ("bgra8", np.dstack([RGB[:, :, ::-1], np.zeros(RGB.shape[:2], np.uint8)])),
    ("rgb16", RGB.astype(np.uint16) * 257),
])
def test_colour_encodings_decode_to_the_same_rgb(encoding, pixels):
    assert np.array_equal(image_to_rgb(image_msg(pixels, encoding, 1)), RGB)


@pytest.mark.parametrize("encoding,dtype", [("mono8", np.uint8), ("8UC1", np.uint8), ("mono16", np.uint16),
                                            ("16UC1", np.uint16)])
def test_gray_encodings_become_three_equal_channels(encoding, dtype):
    gray = RGB[:, :, 0].astype(dtype) * (257 if dtype == np.uint16 else 1)
    out = image_to_rgb(image_msg(gray, encoding, 1))
    assert out.shape == (12, 16, 3) and np.array_equal(out[:, :, 0], RGB[:, :, 0])
    assert np.array_equal(out[:, :, 0], out[:, :, 2])


def test_big_endian_mono16():
    gray = (np.arange(12 * 16, dtype=np.uint16).reshape(12, 16) * 300)
    msg = raw_image(gray.astype(">u2").tobytes(), "mono16", 12, 16, 32, 1, bigendian=True)
    little = image_to_rgb(image_msg(gray, "mono16", 1))
    assert np.array_equal(image_to_rgb(msg), little)


def test_padded_rows_are_read_correctly():
    padded = np.zeros((12, 64), np.uint8)            # step 64 > 16 * 3 = 48
    padded[:, :48] = RGB.reshape(12, 48)
    msg = raw_image(padded.tobytes(), "rgb8", 12, 16, 64, 1)
    assert np.array_equal(image_to_rgb(msg), RGB)


@pytest.mark.parametrize("make,kind,words", [
    (lambda: raw_image(b"\0" * 48, "yuv422_yuy2", 4, 6, 12, 1), "encoding", "unsupported encoding"),
    (lambda: raw_image(b"\0" * 48, "rgb8", 4, 6, 10, 1), "step", "step 10"),
    (lambda: raw_image(b"\0" * 40, "rgb8", 4, 6, 18, 1), "truncated", "40 bytes"),
    (lambda: raw_image(b"\0" * 100, "rgb8", 4, 6, 18, 1), "size", "100 bytes"),
    (lambda: raw_image(b"", "rgb8", 0, 0, 0, 1), "size", "zero size"),
])
def test_malformed_images_say_why(make, kind, words):
    with pytest.raises(BadFrame, match=words) as info:
        image_to_rgb(make())
    assert info.value.kind == kind


def test_oversized_image_is_refused_before_decoding():
    with pytest.raises(BadFrame, match="exceeds"):
        image_to_rgb(image_msg(RGB, "rgb8", 1), max_pixels=100)


def test_compressed_png_is_lossless_and_jpeg_decodes():
    ok, png = cv2.imencode(".png", RGB[:, :, ::-1])
    msg = CompressedImage(format="png", data=png.tobytes())
    assert np.array_equal(compressed_to_rgb(msg), RGB)
    ok, jpg = cv2.imencode(".jpg", RGB[:, :, ::-1])
    assert compressed_to_rgb(CompressedImage(format="jpeg", data=jpg.tobytes())).shape == RGB.shape


@pytest.mark.parametrize("data", [b"", b"\xff\xd8\xff garbage that is not a jpeg"])
def test_undecodable_compressed_frames_are_bad_frames(data):
    with pytest.raises(BadFrame) as info:
        compressed_to_rgb(CompressedImage(format="jpeg", data=data))
    assert info.value.kind == "compressed"


@pytest.mark.parametrize("pixels,encoding", [(RGB, "rgb8"), (RGB[:, :, 0], "mono8"),
                                             (RGB[:, :, 0].astype(np.uint16) * 300, "mono16")])
def test_array_to_image_round_trip(pixels, encoding):
    msg = array_to_image(pixels, encoding)
    assert (msg.encoding, msg.height, msg.width) == (encoding, 12, 16)
    assert msg.step == 16 * pixels.itemsize * (3 if pixels.ndim == 3 else 1)
    back = np.frombuffer(bytes(msg.data), dtype="<u2" if encoding == "mono16" else np.uint8)
    assert np.array_equal(back.reshape(pixels.shape), pixels)

def png_claiming(width: int, height: int) -> bytes:
    """A well-formed PNG whose header claims width x height grey pixels (data for one row only)."""
    import struct
    import zlib

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\0" * (width + 1)))
            + chunk(b"IEND", b""))


def test_compressed_frame_size_is_checked_before_decoding(capfd):
    import io

    from PIL import Image as PILImage

    bomb = CompressedImage(format="png", data=png_claiming(30000, 30000))   # 100 bytes that claim 900 MB
    with pytest.raises(BadFrame) as info:
        compressed_to_rgb(bomb, max_pixels=4096 * 4096)
    assert info.value.kind == "size" and "not decoded" in str(info.value)
    ok = io.BytesIO()
    PILImage.fromarray(scene(20, 30)).save(ok, "PNG")
    broken = CompressedImage(format="png", data=ok.getvalue()[:60])      # valid header, truncated data
    with pytest.raises(BadFrame) as info:
        compressed_to_rgb(broken, max_pixels=10**10)
    assert info.value.kind == "compressed"
    out = capfd.readouterr()
    assert out.err == "" and out.out == ""                          # no libpng/OpenCV lines beside ours
    assert np.array_equal(compressed_to_rgb(CompressedImage(format="png", data=ok.getvalue())), scene(20, 30))


@pytest.mark.skipif(__import__("ovss_ros.ros.image_codec", fromlist=["BRIDGE"]).BRIDGE is None,
                    reason="cv_bridge does not import here (apt ROS only; the own converter is tested above)")
def test_cv_bridge_path_gives_what_the_own_converter_gives():
    from ovss_ros.ros.image_codec import BRIDGE

    rgb = scene(30, 40)
    rows = np.zeros((30, 128), np.uint8)
    rows[:, :120] = rgb.reshape(30, 120)
    msgs = [image_msg(rgb, "rgb8", 1), image_msg(rgb[:, :, ::-1], "bgr8", 1), image_msg(rgb[:, :, 0], "mono8", 1),
            image_msg(np.dstack([rgb, rgb[:, :, :1]]), "rgba8", 1), raw_image(rows.tobytes(), "rgb8", 30, 40, 128, 1)]
    for msg in msgs:
        assert np.array_equal(image_to_rgb(msg, bridge=BRIDGE), image_to_rgb(msg, bridge=None)), msg.encoding
    labels = (rgb[:, :, 0] // 64).astype(np.uint8)
    ours, theirs = array_to_image(labels, "mono8", bridge=None), array_to_image(labels, "mono8", bridge=BRIDGE)
    assert (theirs.encoding, theirs.step, bytes(theirs.data)) == (ours.encoding, ours.step, bytes(ours.data))
