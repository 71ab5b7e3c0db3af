#!/usr/bin/env python3
"""Tests of tools/convert-checkpoint, with the standard library only.

The inputs are made here, in a temporary directory, from the tensors of
tests/data/maskdino/weights.safetensors (a small Mask DINO with a Swin
backbone whose detectron2 config is tests/data/maskdino/config.json):
  - .pth files as torch.save writes them, zip and legacy, by a writer below
    that pickles at protocol 2 with persistent ids ('storage', type, key,
    location, numel) and stand-in modules named torch and torch._utils, with
    a non-contiguous tensor and a storage shared by two tensors;
  - .pkl files whose arrays pickle as numpy arrays do (_reconstruct +
    __setstate__ with a dtype), at protocols 2 and 4 (and 5, _frombuffer);
  - YAML configs with _BASE_ chains, in the style of MaskDINO's configs.
Nothing here needs torch, numpy or PyYAML; where PyYAML is installed the
configs are read both with it and with the tool's own reader.

Run from anywhere: python3 tests/convert/test_convert.py (exit status 1 on a
failure).
"""

import collections
import ctypes
import hashlib
import importlib.machinery
import importlib.util
import io
import json
import os
import pickle
import shutil
import struct
import subprocess
import sys
import tempfile
import types
import unittest
import zipfile

sys.dont_write_bytecode = True  # loading the tool must leave no __pycache__ in tools/

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
TOOL = os.path.join(ROOT, "tools", "convert-checkpoint")
DATA = os.path.join(ROOT, "tests", "data", "maskdino")
SIZES = {"F32": 4, "F16": 2, "BF16": 2, "F64": 8, "I64": 8, "I32": 4, "U8": 1, "BOOL": 1}


def load_tool():
    loader = importlib.machinery.SourceFileLoader("convert_checkpoint", TOOL)
    spec = importlib.util.spec_from_loader("convert_checkpoint", loader)
    mod = importlib.util.module_from_spec(spec)
    loader.exec_module(mod)
    return mod


def slurp(path, mode="rb"):
    with open(path, mode) as f:
        return f.read()


def read_safetensors(path):
    """(header dict with its key order kept, header length, data section,
    raw header)."""
    raw = slurp(path)
    n = struct.unpack("<Q", raw[:8])[0]
    header = json.loads(raw[8:8 + n].decode("utf-8"), object_pairs_hook=collections.OrderedDict)
    return header, n, raw[8 + n:], raw[8:8 + n]


def tensors_of(path):
    """{name: (dtype, shape, bytes)} of a safetensors file."""
    header, _, data, _ = read_safetensors(path)
    return {k: (v["dtype"], tuple(v["shape"]), data[v["data_offsets"][0]:v["data_offsets"][1]])
            for k, v in header.items() if k != "__metadata__"}


SOURCE = tensors_of(os.path.join(DATA, "weights.safetensors"))
CFG_MODEL = json.loads(slurp(os.path.join(DATA, "config.json"), "r"))["cfg_MODEL"]


# ---- writers of the formats, without torch or numpy ----------------------------

class Stand:
    """Stand-in modules torch, torch._utils, numpy, numpy.core.multiarray,
    installed in sys.modules only while pickling, so that pickle names the
    same globals torch and numpy would."""

    def __init__(self, core="numpy.core"):
        def mod(name, **attrs):
            m = types.ModuleType(name)
            for k, v in attrs.items():
                setattr(v, "__module__", name)
                setattr(v, "__qualname__", k)
                setattr(v, "__name__", k)
                setattr(m, k, v)
            return m

        def _rebuild_tensor_v2(*a):
            pass

        def _reconstruct(*a):
            pass

        def _frombuffer(*a):
            pass

        self.storage_types = {d: type(n, (), {}) for d, n in (
            ("F32", "FloatStorage"), ("F16", "HalfStorage"), ("BF16", "BFloat16Storage"),
            ("F64", "DoubleStorage"), ("I64", "LongStorage"), ("I32", "IntStorage"),
            ("U8", "ByteStorage"), ("BOOL", "BoolStorage"))}
        self.ndarray = type("ndarray", (), {})
        self.dtype = type("dtype", (), {})
        self.mods = {
            "torch": mod("torch", **{c.__name__: c for c in self.storage_types.values()}),
            "torch._utils": mod("torch._utils", _rebuild_tensor_v2=_rebuild_tensor_v2),
            "numpy": mod("numpy", ndarray=self.ndarray, dtype=self.dtype),
            core + ".multiarray": mod(core + ".multiarray", _reconstruct=_reconstruct),
            core + ".numeric": mod(core + ".numeric", _frombuffer=_frombuffer),
        }
        self.rebuild = self.mods["torch._utils"]._rebuild_tensor_v2
        self.reconstruct = self.mods[core + ".multiarray"]._reconstruct
        self.frombuffer = self.mods[core + ".numeric"]._frombuffer

    def __enter__(self):
        self.saved = {k: sys.modules.get(k) for k in self.mods}
        sys.modules.update(self.mods)
        return self

    def __exit__(self, *exc):
        for k, v in self.saved.items():
            if v is None:
                sys.modules.pop(k, None)
            else:
                sys.modules[k] = v


class TStorage:
    def __init__(self, key, dtype, data):
        self.key, self.dtype, self.data = key, dtype, data


class TTensor:
    """A tensor as torch pickles it: a view (offset, size, stride) of a storage."""

    def __init__(self, stand, storage, offset, size, stride):
        self.stand, self.storage, self.args = stand, storage, (offset, tuple(size), tuple(stride))

    def __reduce__(self):
        return (self.stand.rebuild,
                (self.storage,) + self.args + (False, collections.OrderedDict()))


def contiguous_stride(shape):
    stride, s = [], 1
    for d in reversed(shape):
        stride.append(s)
        s *= d
    return tuple(reversed(stride))


def transpose2(data, rows, cols, size):
    """Row-major (rows, cols) -> row-major (cols, rows)."""
    out = bytearray(len(data))
    for r in range(rows):
        for c in range(cols):
            out[(c * rows + r) * size:(c * rows + r + 1) * size] = data[(r * cols + c) * size:
                                                                        (r * cols + c + 1) * size]
    return bytes(out)


def torch_tensors(stand, tensors, transposed=(), shared=()):
    """{name: TTensor} with one storage each, but: each name in transposed
    (2-D) is stored transposed and described by strides; the pair `shared`
    lives in one storage at offsets 0 and n."""
    out, storages = {}, []

    def new_storage(dtype, data):
        s = TStorage(str(len(storages)), dtype, data)
        storages.append(s)
        return s

    if shared:
        a, b = shared
        (da, sa, ba), (db, sb, bb) = tensors[a], tensors[b]
        assert da == db
        st = new_storage(da, ba + bb)
        out[a] = TTensor(stand, st, 0, sa, contiguous_stride(sa))
        out[b] = TTensor(stand, st, len(ba) // SIZES[da], sb, contiguous_stride(sb))
    for name, (dtype, shape, data) in tensors.items():
        if name in out:
            continue
        if name in transposed:
            r, c = shape
            st = new_storage(dtype, transpose2(data, r, c, SIZES[dtype]))
            out[name] = TTensor(stand, st, 0, shape, (1, r))
        else:
            out[name] = TTensor(stand, new_storage(dtype, data), 0, shape,
                                contiguous_stride(shape))
    return out, storages


def torch_pickle(stand, obj, legacy=False):
    buf = io.BytesIO()
    p = pickle.Pickler(buf, protocol=2)

    def persistent_id(o):
        if isinstance(o, TStorage):
            pid = ("storage", stand.storage_types[o.dtype], o.key, "cpu",
                   len(o.data) // SIZES[o.dtype])
            return pid + (None,) if legacy else pid
        return None

    p.persistent_id = persistent_id
    p.dump(obj)
    return buf.getvalue()


def write_torch_zip(path, obj_fn, name="archive"):
    """torch.save's zip: NAME/data.pkl, NAME/data/KEY, NAME/byteorder, NAME/version."""
    with Stand() as stand:
        obj, storages = obj_fn(stand)
        pkl = torch_pickle(stand, obj)
    with zipfile.ZipFile(path, "w", zipfile.ZIP_STORED) as z:
        z.writestr(name + "/data.pkl", pkl)
        z.writestr(name + "/byteorder", "little")
        for s in storages:
            z.writestr(name + "/data/" + s.key, s.data)
        z.writestr(name + "/version", "3\n")


def write_torch_legacy(path, obj_fn):
    """torch.save(_use_new_zipfile_serialization=False)."""
    with Stand() as stand:
        obj, storages = obj_fn(stand)
        pkl = torch_pickle(stand, obj, legacy=True)
    with open(path, "wb") as f:
        pickle.dump(0x1950A86A20F9469CFC6C, f, protocol=2)
        pickle.dump(1001, f, protocol=2)
        pickle.dump({"protocol_version": 1001, "little_endian": True,
                     "type_sizes": {"short": 2, "int": 4, "long": 4}}, f, protocol=2)
        f.write(pkl)
        pickle.dump([s.key for s in storages], f, protocol=2)
        for s in storages:
            f.write(struct.pack("<q", len(s.data) // SIZES[s.dtype]))
            f.write(s.data)


def checkpoint(tensors, stand, transposed=(), shared=()):
    """detectron2's checkpoint dict around a state dict."""
    tt, storages = torch_tensors(stand, tensors, transposed, shared)
    sd = collections.OrderedDict(sorted(tt.items()))
    first = next(iter(tt.values()))
    obj = {"model": sd, "iteration": 89999,
           "optimizer": {"state": {0: {"exp_avg": first}}, "param_groups": [{"lr": 1e-4}]},
           "scheduler": {"base_lrs": [1e-4], "last_epoch": 89999}}
    return obj, storages


class NpDtype:
    def __init__(self, stand, spec, order):
        self.stand, self.spec, self.order = stand, spec, order

    def __reduce__(self):
        return (self.stand.dtype, (self.spec, False, True),
                (3, self.order, None, None, None, -1, -1, 0))


class NpArray:
    """An array as numpy pickles it: _reconstruct(ndarray, (0,), b'b'), then
    __setstate__((1, shape, dtype, is_fortran, raw bytes)); at protocol 5
    _frombuffer(buffer, dtype, shape, order)."""

    def __init__(self, stand, spec, order, shape, data, fortran=False):
        self.stand, self.dtype = stand, NpDtype(stand, spec, order)
        self.shape, self.data, self.fortran = tuple(shape), data, fortran

    def __reduce_ex__(self, protocol):
        if protocol >= 5:
            return (self.stand.frombuffer, (pickle.PickleBuffer(self.data), self.dtype,
                                            self.shape, "F" if self.fortran else "C"))
        return (self.stand.reconstruct, (self.stand.ndarray, (0,), b"b"),
                (1, self.shape, self.dtype, self.fortran, self.data))


def numpy_arrays(stand, tensors, fortran=(), big=()):
    """{name: NpArray}: names in fortran are stored column-major, names in big
    big-endian."""
    spec = {"F32": "f4", "I64": "i8", "F16": "f2", "F64": "f8"}
    out = collections.OrderedDict()
    for name, (dtype, shape, data) in sorted(tensors.items()):
        size = SIZES[dtype]
        order, fort = "<", False
        if name in fortran:
            r, c = shape
            data, fort = transpose2(data, r, c, size), True
        if name in big:
            data = b"".join(data[i:i + size][::-1] for i in range(0, len(data), size))
            order = ">"
        out[name] = NpArray(stand, spec[dtype], order, shape, data, fort)
    return out


def write_pkl(path, tensors, protocol, core="numpy.core", **kw):
    with Stand(core) as stand:
        arrays = numpy_arrays(stand, tensors, **kw)
        with open(path, "wb") as f:
            pickle.dump({"model": arrays, "__author__": "test", "matching_heuristics": True},
                        f, protocol=protocol)


# ---- configs --------------------------------------------------------------------

BASE_YAML = """\
# the style of MaskDINO's configs/coco/instance-segmentation/Base-COCO-InstanceSegmentation.yaml
MODEL:
  BACKBONE:
    FREEZE_AT: 0
    NAME: "build_resnet_backbone"
  WEIGHTS: "detectron2://ImageNetPretrained/torchvision/R-50.pkl"
  PIXEL_MEAN: [123.675, 116.280, 103.530]
  PIXEL_STD: [58.395, 57.120, 57.375]
  RESNETS:
    DEPTH: 50
    STEM_TYPE: "basic"  # not used
    STEM_OUT_CHANNELS: 64
    STRIDE_IN_1X1: False
    OUT_FEATURES: ["res2", "res3", "res4", "res5"]
    # NORM: "SyncBN"
    RES5_MULTI_GRID: [1, 1, 1]  # not used
DATASETS:
  TRAIN: ("coco_2017_train",)
SOLVER:
  BASE_LR: 1e-4
  STEPS: (327778, 355092)
INPUT:
  MIN_SIZE_TRAIN: !!python/object/apply:eval ["[int(x * 0.1 * 640) for x in range(5, 21)]"]
  FORMAT: "RGB"
VERSION: 2
"""

MID_YAML = """\
_BASE_: Base-COCO-InstanceSegmentation.yaml
MODEL:
  META_ARCHITECTURE: "MaskDINO"
  SEM_SEG_HEAD:
    NAME: "MaskDINOHead"
    IGNORE_VALUE: 255
    NUM_CLASSES: 80
    CONVS_DIM: 256
    MASK_DIM: 256
    NORM: "GN"
    PIXEL_DECODER_NAME: "MaskDINOEncoder"
    DIM_FEEDFORWARD: 2048
    TOTAL_NUM_FEATURE_LEVELS: 4
    IN_FEATURES: ["res2", "res3", "res4", "res5"]
    DEFORMABLE_TRANSFORMER_ENCODER_IN_FEATURES: ["res3", "res4", "res5"]
    TRANSFORMER_ENC_LAYERS: 6
  MaskDINO:
    NUM_OBJECT_QUERIES: 300
    DEC_LAYERS: 9  # 9+1, 9 decoder layers, add one for the loss on learnable query
    INITIALIZE_BOX_TYPE: 'no'
    TEST:
      SEMANTIC_ON: False
      INSTANCE_ON: True
"""

# The test case of tests/data/maskdino/config.json, as a config over MID_YAML.
TINY_YAML = """\
_BASE_: ../maskdino_R50_bs16_50ep_3s.yaml
MODEL:
  WEIGHTS: ""
  PIXEL_MEAN: [0.0, 0.0, 0.0]
  PIXEL_STD: [ 1.0, 1.0, 1.0 ]
  BACKBONE:
    NAME: "D2SwinTransformer"
  RESNETS:
    STEM_TYPE: deeplab
    RES5_MULTI_GRID: [1, 2, 4]
    STRIDE_IN_1X1: true
    OUT_FEATURES: ['res4']
  SWIN:
    EMBED_DIM: 24
    DEPTHS: [ 2, 2, 2, 2 ]
    WINDOW_SIZE: 4
    DROP_PATH_RATE: 0.0
  SEM_SEG_HEAD:
    IN_FEATURES:
      - res2
      - "res3"
      - res4
      - 'res5'
    NUM_CLASSES: 5
    CONVS_DIM: 32
    MASK_DIM: 32
    DIM_FEEDFORWARD: 64
    TOTAL_NUM_FEATURE_LEVELS: 3
    TRANSFORMER_ENC_LAYERS: 2
  MaskDINO:
    DROPOUT: 0.0
    DIM_FEEDFORWARD: 128
    DEC_LAYERS: 3
    NUM_OBJECT_QUERIES: 10
    INITIALIZE_BOX_TYPE: "bitmask"
    DN: "no"
    DN_NUM: 12
    TRAIN_NUM_POINTS: 112
    TEST:
      OBJECT_MASK_THRESHOLD: 0.25
      OVERLAP_THRESHOLD: 0.8
"""

M2F_YAML = """\
MODEL:
  META_ARCHITECTURE: "MaskFormer"
  BACKBONE:
    NAME: "D2SwinTransformer"
  SWIN: {EMBED_DIM: 24, DEPTHS: [2, 2, 2, 2], WINDOW_SIZE: 4}
  SEM_SEG_HEAD:
    NAME: "MaskFormerHead"
    PIXEL_DECODER_NAME: "MSDeformAttnPixelDecoder"
  MASK_FORMER:
    TRANSFORMER_IN_FEATURE: "multi_scale_pixel_decoder"
    DEC_LAYERS: 10
    TEST:
      SEMANTIC_ON: False
      INSTANCE_ON: True
"""

# The keys under MODEL that the chain above sets (dotted), to compare the
# rest with the test case's defaults.
YAML_SET = {
    "BACKBONE.FREEZE_AT", "BACKBONE.NAME", "WEIGHTS", "PIXEL_MEAN", "PIXEL_STD",
    "RESNETS.DEPTH", "RESNETS.STEM_TYPE", "RESNETS.STEM_OUT_CHANNELS", "RESNETS.STRIDE_IN_1X1",
    "RESNETS.OUT_FEATURES", "RESNETS.RES5_MULTI_GRID", "META_ARCHITECTURE",
    "SEM_SEG_HEAD.NAME", "SEM_SEG_HEAD.IGNORE_VALUE", "SEM_SEG_HEAD.NUM_CLASSES",
    "SEM_SEG_HEAD.CONVS_DIM", "SEM_SEG_HEAD.MASK_DIM", "SEM_SEG_HEAD.NORM",
    "SEM_SEG_HEAD.PIXEL_DECODER_NAME", "SEM_SEG_HEAD.DIM_FEEDFORWARD",
    "SEM_SEG_HEAD.TOTAL_NUM_FEATURE_LEVELS", "SEM_SEG_HEAD.IN_FEATURES",
    "SEM_SEG_HEAD.DEFORMABLE_TRANSFORMER_ENCODER_IN_FEATURES",
    "SEM_SEG_HEAD.TRANSFORMER_ENC_LAYERS", "MaskDINO.NUM_OBJECT_QUERIES",
    "MaskDINO.DEC_LAYERS", "MaskDINO.INITIALIZE_BOX_TYPE", "MaskDINO.TEST.SEMANTIC_ON",
    "MaskDINO.TEST.INSTANCE_ON", "SWIN.EMBED_DIM", "SWIN.DEPTHS", "SWIN.WINDOW_SIZE",
    "SWIN.DROP_PATH_RATE", "MaskDINO.DROPOUT", "MaskDINO.DIM_FEEDFORWARD", "MaskDINO.DN",
    "MaskDINO.DN_NUM", "MaskDINO.TRAIN_NUM_POINTS", "MaskDINO.TEST.OBJECT_MASK_THRESHOLD",
    "MaskDINO.TEST.OVERLAP_THRESHOLD",
}

# add_deeplab_config()'s keys: in the resolved config (the projects'
# train_net.py call it), not in the test case (made without it).
DEEPLAB_KEYS = {
    "SEM_SEG_HEAD.LOSS_TYPE", "SEM_SEG_HEAD.PROJECT_FEATURES", "SEM_SEG_HEAD.PROJECT_CHANNELS",
    "SEM_SEG_HEAD.ASPP_CHANNELS", "SEM_SEG_HEAD.ASPP_DILATIONS", "SEM_SEG_HEAD.ASPP_DROPOUT",
    "SEM_SEG_HEAD.USE_DEPTHWISE_SEPARABLE_CONV", "RESNETS.RES4_DILATION",
    "RESNETS.RES5_MULTI_GRID", "RESNETS.STEM_TYPE",
}


def flatten(d, prefix=""):
    out = {}
    for k, v in d.items():
        if isinstance(v, dict):
            out.update(flatten(v, prefix + k + "."))
        else:
            out[prefix + k] = v
    return out


def have_pyyaml():
    return importlib.util.find_spec("yaml") is not None


class Base(unittest.TestCase):
    def setUp(self):
        self.dir = tempfile.mkdtemp(prefix="convert-test.")
        self.cfgdir = os.path.join(self.dir, "configs", "coco", "instance-segmentation")
        os.makedirs(os.path.join(self.cfgdir, "swin"))
        for name, text in (("Base-COCO-InstanceSegmentation.yaml", BASE_YAML),
                           ("maskdino_R50_bs16_50ep_3s.yaml", MID_YAML),
                           ("swin/tiny.yaml", TINY_YAML), ("m2f.yaml", M2F_YAML)):
            with open(os.path.join(self.cfgdir, name), "w") as f:
                f.write(text)
        self.cfg = os.path.join(self.cfgdir, "swin", "tiny.yaml")

    def tearDown(self):
        shutil.rmtree(self.dir)

    def p(self, *names):
        return os.path.join(self.dir, *names)

    def run_tool(self, *args, env=None, direct=False):
        e = dict(os.environ)
        e.update(env or {})
        cmd = [TOOL] if direct else [sys.executable, TOOL]
        r = subprocess.run(cmd + [str(a) for a in args], stdout=subprocess.PIPE,
                           stderr=subprocess.PIPE, env=e, universal_newlines=True)
        return r.returncode, r.stdout, r.stderr

    def convert_ok(self, ckpt, out, *extra, cfg=None, env=None):
        rc, so, se = self.run_tool(ckpt, cfg or self.cfg, out, *extra, env=env)
        self.assertEqual(rc, 0, se)
        return json.loads(slurp(os.path.join(out, "config.json"), "r")), \
            os.path.join(out, "model.safetensors")

    def fails(self, args, status, line, out=None, env=None, contains=False):
        """Run; expect the exit status, the one stderr line (or, with
        contains, that line among several), and no output left in out."""
        before = sorted(os.listdir(out)) if out and os.path.isdir(out) else None
        rc, so, se = self.run_tool(*args, env=env)
        self.assertEqual(rc, status, se)
        lines = se.splitlines()
        if contains:
            self.assertIn(line, lines)
            for ln in lines:
                self.assertTrue(ln.startswith("convert-checkpoint: "), ln)
        else:
            self.assertEqual(lines, [line])
        if out is not None:
            if before is None:
                self.assertFalse(os.path.exists(out), "output left behind")
            else:
                self.assertEqual(sorted(os.listdir(out)), before, "output left behind")
        return lines

    def assert_same_tensors(self, path, expect):
        got = tensors_of(path)
        self.assertEqual(sorted(got), sorted(expect))
        for k, (dtype, shape, data) in expect.items():
            self.assertEqual(got[k][0], dtype, k)
            self.assertEqual(got[k][1], shape, k)
            self.assertTrue(got[k][2] == data, "%s: bytes differ" % k)

    def assert_header(self, path, source):
        header, n, data, raw = read_safetensors(path)
        self.assertEqual(n % 8, 0)
        self.assertEqual(raw.rstrip(b" ") + b" " * (len(raw) - len(raw.rstrip(b" "))), raw)
        self.assertTrue(raw.rstrip(b" ").endswith(b"}"))
        keys = list(header)
        self.assertEqual(keys[0], "__metadata__")
        self.assertEqual(keys[1:], sorted(keys[1:], key=lambda k: k.encode()))
        meta = header["__metadata__"]
        self.assertEqual(meta["source"], os.path.basename(source))
        self.assertEqual(meta["sha256"], hashlib.sha256(slurp(source)).hexdigest())
        spans = sorted(tuple(v["data_offsets"]) for k, v in header.items() if k != "__metadata__")
        at = 0
        for b, e in spans:
            self.assertEqual(b, at)
            at = e
        self.assertEqual(at, len(data))
        for k, v in header.items():
            if k != "__metadata__":
                self.assertEqual(v["data_offsets"][0] % SIZES[v["dtype"]], 0, k)


class TestTorch(Base):
    def test_zip_values_and_header(self):
        ck = self.p("model_final.pth")
        write_torch_zip(ck, lambda s: checkpoint(
            SOURCE, s, transposed={"backbone.layers.0.blocks.0.mlp.fc1.weight",
                                   "sem_seg_head.predictor.class_embed.weight"},
            shared=("backbone.norm0.weight", "backbone.norm0.bias")), name="model_final")
        out = self.p("out")
        cfg, st = self.convert_ok(ck, out)
        self.assert_same_tensors(st, SOURCE)
        self.assert_header(st, ck)
        self.assertEqual(sorted(os.listdir(out)), ["config.json", "model.safetensors"])
        src = cfg["source"]
        self.assertEqual(src["checkpoint"], "model_final.pth")
        self.assertEqual(src["format"], "torch zip (torch.save)")
        self.assertEqual(src["dropped"], ["iteration", "optimizer", "scheduler"])
        self.assertEqual(src["tensors"], len(SOURCE))
        self.assertEqual(src["config"], ["../Base-COCO-InstanceSegmentation.yaml",
                                         "../maskdino_R50_bs16_50ep_3s.yaml", "tiny.yaml"])

    def test_legacy(self):
        ck = self.p("legacy.pth")
        write_torch_legacy(ck, lambda s: checkpoint(
            SOURCE, s, transposed={"backbone.layers.1.blocks.1.attn.proj.weight"},
            shared=("backbone.norm1.weight", "backbone.norm1.bias")))
        cfg, st = self.convert_ok(ck, self.p("out"))
        self.assert_same_tensors(st, SOURCE)
        self.assertEqual(cfg["source"]["format"], "torch legacy (torch.save)")

    def test_dtypes_kept(self):
        extra = dict(SOURCE)
        extra["extra.half"] = ("F16", (3,), bytes([1, 60, 0, 188, 255, 123]))
        extra["extra.bf16"] = ("BF16", (1, 2), bytes([128, 63, 0, 192]))
        extra["extra.double"] = ("F64", (1,), struct.pack("<d", 0.1))
        extra["extra.int"] = ("I32", (), struct.pack("<i", -7))
        ck = self.p("dtypes.pth")
        write_torch_zip(ck, lambda s: torch_tensors(s, extra))  # the state dict itself
        _, st = self.convert_ok(ck, self.p("out"))
        self.assert_same_tensors(st, extra)
        self.assert_header(st, ck)

    def test_unknown_global_refused(self):
        sentinel = self.p("pwned")
        ck = self.p("evil.pth")

        class Evil:
            def __reduce__(self):
                return (os.system, ("touch " + sentinel,))

        def obj(stand):
            o, storages = checkpoint(SOURCE, stand)
            o["trainer"] = Evil()
            return o, storages

        write_torch_zip(ck, obj)
        out = self.p("out")
        self.fails([ck, self.cfg, out], 1,
                   "convert-checkpoint: %s: archive/data.pkl: global '%s.system' is not allowed "
                   "(only tensors, storages, numpy arrays and plain containers are read)"
                   % (ck, os.system.__module__), out)
        self.assertFalse(os.path.exists(sentinel))

    def test_truncated_zip(self):
        ck = self.p("whole.pth")
        write_torch_zip(ck, lambda s: checkpoint(SOURCE, s))
        data = slurp(ck)
        cut = self.p("cut.pth")
        with open(cut, "wb") as f:
            f.write(data[:len(data) // 2])
        out = self.p("out")
        self.fails([cut, self.cfg, out], 1, "convert-checkpoint: %s: not a readable zip archive "
                   "(truncated or damaged?): File is not a zip file" % cut, out)

    def test_damaged_storage_leaves_nothing(self):
        # A flipped byte in the last storage is found by its CRC while
        # model.safetensors is being written: the temporary file and the
        # directory made for it are removed.
        ck = self.p("crc.pth")
        write_torch_zip(ck, lambda s: checkpoint(SOURCE, s))
        with zipfile.ZipFile(ck) as z:
            info = z.getinfo("archive/data/0")
        raw = bytearray(slurp(ck))
        start = info.header_offset + 30 + len(info.filename) + len(info.extra)
        raw[start + 5] ^= 0xFF
        with open(ck, "wb") as f:
            f.write(raw)
        out = self.p("out")
        self.fails([ck, self.cfg, out], 1, "convert-checkpoint: %s: archive/data/0: cannot "
                   "read: Bad CRC-32 for file 'archive/data/0'" % ck, out)

    def test_storage_too_small(self):
        ck = self.p("short.pth")

        def obj(stand):
            o, storages = checkpoint(SOURCE, stand)
            o["model"]["backbone.norm3.weight"].args = (100, (192,), (1,))
            return o, storages

        write_torch_zip(ck, obj)
        out = self.p("out")
        self.fails([ck, self.cfg, out], 1, "convert-checkpoint: %s: backbone.norm3.weight: "
                   "reaches element 292 of a storage of 192 (offset 100, size [192], "
                   "stride [1])" % ck, out)


class TestNumpy(Base):
    def test_pkl_protocols(self):
        fortran = {"backbone.layers.0.blocks.1.attn.qkv.weight"}
        big = {"backbone.patch_embed.proj.bias", "backbone.layers.0.blocks.0.attn.relative_"
               "position_index"}
        t = dict(SOURCE)
        t["extra.empty"] = ("F32", (0, 3), b"")  # b"" pickles as bytes() at protocol 2
        for proto, core in ((2, "numpy.core"), (4, "numpy.core"), (4, "numpy._core"),
                            (5, "numpy._core")):
            if proto > pickle.HIGHEST_PROTOCOL:
                continue
            ck = self.p("model_final_%d.pkl" % proto)
            write_pkl(ck, t, proto, core, fortran=fortran, big=big)
            out = self.p("out%d%s" % (proto, core))
            cfg, st = self.convert_ok(ck, out)
            self.assert_same_tensors(st, t)
            self.assert_header(st, ck)
            self.assertEqual(cfg["source"]["format"], "pickle")
            self.assertEqual(cfg["source"]["dropped"], ["__author__", "matching_heuristics"])
            self.assertEqual(cfg["source"]["__author__"], "test")

    def test_unknown_global_refused(self):
        sentinel = self.p("pwned")

        class Evil:
            def __reduce__(self):
                return (os.system, ("touch " + sentinel,))

        ck = self.p("evil.pkl")
        with open(ck, "wb") as f:
            pickle.dump({"model": {"a": Evil()}}, f, protocol=4)
        out = self.p("out")
        self.fails([ck, self.cfg, out], 1, "convert-checkpoint: %s: pickle: global '%s.system' "
                   "is not allowed (only tensors, storages, numpy arrays and plain containers "
                   "are read)" % (ck, os.system.__module__), out)
        self.assertFalse(os.path.exists(sentinel))

    def test_not_a_state_dict(self):
        ck = self.p("x.pkl")
        with open(ck, "wb") as f:
            pickle.dump({"blobs": 1}, f, protocol=2)
        self.fails([ck, self.cfg, self.p("out")], 1, "convert-checkpoint: %s: no state dict: "
                   "neither a 'model' entry (detectron2) nor a dict of tensors; its entries are "
                   "blobs" % ck, self.p("out"))


class TestChecks(Base):
    def write(self, tensors, name="ck.pth"):
        ck = self.p(name)
        write_torch_zip(ck, lambda s: checkpoint(tensors, s))
        return ck

    def test_shape_mismatch(self):
        t = dict(SOURCE)
        d, _, b = t["backbone.norm3.weight"]
        t["backbone.norm3.weight"] = (d, (191,), b[:191 * 4])
        ck, out = self.write(t), self.p("out")
        self.fails([ck, self.cfg, out], 1, "convert-checkpoint: %s: backbone.norm3.weight: "
                   "shape (191) where the config wants (192)" % ck, out)
        # --no-check converts it as it is
        self.convert_ok(ck, out, "--no-check")

    def test_missing_and_extra(self):
        t = dict(SOURCE)
        del t["backbone.layers.2.downsample.reduction.weight"]
        t["backbone.layers.3.downsample.reduction.weight"] = ("F32", (1,), b"\0\0\0\0")
        ck, out = self.write(t), self.p("out")
        rc, so, se = self.run_tool(ck, self.cfg, out)
        self.assertEqual(rc, 1)
        self.assertEqual(se.splitlines(), [
            "convert-checkpoint: %s: backbone.layers.2.downsample.reduction.weight: missing "
            "(the config wants shape (192, 384))" % ck,
            "convert-checkpoint: %s: backbone.layers.3.downsample.reduction.weight: not a "
            "tensor of the D2SwinTransformer the config describes" % ck])
        self.assertFalse(os.path.exists(out))

    def config(self, swin):
        cfg = self.p("swin.yaml")
        with open(cfg, "w") as f:
            f.write("_BASE_: %s\nMODEL:\n  SWIN:\n    %s\n" % (self.cfg, swin))
        return cfg

    def test_config_disagrees(self):
        # WINDOW_SIZE 7 where the checkpoint has 4: the bias table and the
        # index of each of the 8 blocks
        ck, out = self.write(SOURCE), self.p("out")
        lines = self.fails([ck, self.config("WINDOW_SIZE: 7"), out], 1,
                           "convert-checkpoint: %s: backbone.layers.0.blocks.0.attn.relative_"
                           "position_bias_table: shape (49, 3) where the config wants (169, 3)"
                           % ck, out, contains=True)
        self.assertEqual(len(lines), 16)
        self.assertIn("convert-checkpoint: %s: backbone.layers.3.blocks.1.attn.relative_position_"
                      "index: shape (16, 16) where the config wants (49, 49)" % ck, lines)
        # EMBED_DIM 32 where it has 24: nearly every tensor; 20 lines and a count
        lines = self.fails([ck, self.config("EMBED_DIM: 32"), out], 1,
                           "convert-checkpoint: %s: backbone.patch_embed.proj.weight: shape "
                           "(24, 3, 4, 4) where the config wants (32, 3, 4, 4)" % ck, out,
                           contains=True)
        self.assertEqual(len(lines), 21)
        self.assertRegex(lines[-1], r"^convert-checkpoint: %s: \d+ more mismatches$" % ck)


class TestConfig(Base):
    def resolved(self, env=None):
        ck = self.p("ck.pth")
        if not os.path.exists(ck):
            write_torch_zip(ck, lambda s: checkpoint(SOURCE, s))
        out = self.p("out-%s" % len(os.listdir(self.dir)))
        cfg, _ = self.convert_ok(ck, out, env=env)
        return cfg

    def test_maskdino_defaults(self):
        model = self.resolved()["MODEL"]
        flat, ref = flatten(model), flatten(CFG_MODEL)
        # the keys the YAML chain does not set: detectron2's defaults as the
        # test case resolved them
        unset = sorted(set(ref) - YAML_SET)
        self.assertGreater(len(unset), 150)
        for k in unset:
            self.assertEqual(flat[k], ref[k], k)
            self.assertIs(type(flat[k]), type(ref[k]), k)
        # and as the chain sets them, it is the test case's whole cfg.MODEL,
        # plus add_deeplab_config()'s keys, in detectron2's key order
        self.assertEqual({k: v for k, v in flat.items() if k not in DEEPLAB_KEYS},
                         {k: v for k, v in ref.items() if k not in DEEPLAB_KEYS})
        self.assertEqual(set(flat) - set(ref), DEEPLAB_KEYS)
        self.assertEqual(list(model), list(CFG_MODEL))
        self.assertEqual(list(model["MaskDINO"]), list(CFG_MODEL["MaskDINO"]))
        self.assertEqual(flat["SEM_SEG_HEAD.LOSS_TYPE"], "hard_pixel_mining")

    def test_both_yaml_readers_agree(self):
        a = self.resolved()
        b = self.resolved(env={"CONVERT_CHECKPOINT_NO_PYYAML": "1"})
        self.assertEqual(a, b)

    def test_mini_yaml(self):
        tool = load_tool()
        text = "\n".join([
            "# comment", "A: 1e-4", "B: 1.0e-4", "C: [1, [2, 3], {x: y}]", "D: 'it''s'",
            'E: "a\\tb #c"  # comment', "F: yes", "G: ~", "H: 0x10", "I: 010", "J: .inf",
            "K:", "  - a", "  - b: 1", "    c: 2", "L:", "- 3", "M: !!python/tuple [1, 2]",
            "N: [1,", "    2]", "O: (1, 2)", "P: True", "Q: -1.5", "R: 1_000", "S:",
            "  T: {}", "  U: []", "V: 'x: y'"])
        got = tool.yaml_load_mini(text)
        want = {"A": "1e-4", "B": 1e-4, "C": [1, [2, 3], {"x": "y"}], "D": "it's",
                "E": "a\tb #c", "F": True, "G": None, "H": 16, "I": 8, "J": float("inf"),
                "K": ["a", {"b": 1, "c": 2}], "L": [3],
                "M": tool.Tagged("tag:yaml.org,2002:python/tuple", ""), "N": [1, 2],
                "O": "(1, 2)", "P": True, "Q": -1.5, "R": 1000, "S": {"T": {}, "U": []},
                "V": "x: y"}
        self.assertEqual(got, want)
        if have_pyyaml():
            self.assertEqual(tool.yaml_load_mini(text.replace("M: !!python/tuple [1, 2]\n", "")),
                             __import__("yaml").safe_load(text.replace(
                                 "M: !!python/tuple [1, 2]\n", "")))

    def test_mask2former(self):
        ck = self.p("ck.pth")
        write_torch_zip(ck, lambda s: checkpoint(SOURCE, s))
        cfg, _ = self.convert_ok(ck, self.p("out"), cfg=os.path.join(self.cfgdir, "m2f.yaml"))
        m = cfg["MODEL"]
        self.assertEqual(cfg["source"]["project"], "Mask2Former")
        self.assertNotIn("MaskDINO", m)
        self.assertEqual(m["MASK_FORMER"]["DEC_LAYERS"], 10)
        self.assertEqual(m["MASK_FORMER"]["NUM_OBJECT_QUERIES"], 100)
        self.assertEqual(m["MASK_FORMER"]["TEST"], {
            "SEMANTIC_ON": False, "INSTANCE_ON": True, "PANOPTIC_ON": False,
            "OBJECT_MASK_THRESHOLD": 0.0, "OVERLAP_THRESHOLD": 0.0,
            "SEM_SEG_POSTPROCESSING_BEFORE_INFERENCE": False})
        self.assertEqual(m["SEM_SEG_HEAD"]["PIXEL_DECODER_NAME"], "MSDeformAttnPixelDecoder")
        self.assertEqual(m["SWIN"]["DROP_PATH_RATE"], 0.3)

    def test_missing_base(self):
        cfg = self.p("bad.yaml")
        with open(cfg, "w") as f:
            f.write("_BASE_: nope/Base.yaml\nMODEL:\n  META_ARCHITECTURE: MaskDINO\n")
        ck, out = self.p("ck.pth"), self.p("out")
        write_torch_zip(ck, lambda s: checkpoint(SOURCE, s))
        self.fails([ck, cfg, out], 1, "convert-checkpoint: %s: _BASE_: %s: no such file"
                   % (cfg, self.p("nope", "Base.yaml")), out)

    def test_unknown_key_and_type(self):
        ck, out = self.p("ck.pth"), self.p("out")
        write_torch_zip(ck, lambda s: checkpoint(SOURCE, s))
        for body, line in (
                ("  SWIN:\n    EMBED_DIMS: 24\n", "MODEL.SWIN.EMBED_DIMS: not a key of "
                 "detectron2's config with the project's additions (yacs: Non-existent config "
                 "key)"),
                ("  SWIN:\n    EMBED_DIM: '24x'\n", "MODEL.SWIN.EMBED_DIM: '24x' (str) where the "
                 "default is 96 (int) (yacs: Type mismatch)"),
                ("  SWIN:\n    MLP_RATIO: !!python/object/apply:eval ['4.0']\n",
                 "MODEL.SWIN.MLP_RATIO: YAML tag tag:yaml.org,2002:python/object/apply:eval is "
                 "not evaluated (code in a config is not run)")):
            cfg = self.p("k.yaml")
            with open(cfg, "w") as f:
                f.write("_BASE_: %s\nMODEL:\n%s" % (self.cfg, body))
            for env in ({}, {"CONVERT_CHECKPOINT_NO_PYYAML": "1"}):
                self.fails([ck, cfg, out], 1, "convert-checkpoint: %s: %s" % (cfg, line), out,
                           env=env)


class TestCommandLine(Base):
    def test_existing_outdir(self):
        ck = self.p("ck.pth")
        write_torch_zip(ck, lambda s: checkpoint(SOURCE, s))
        out = self.p("out")
        os.makedirs(out)
        with open(os.path.join(out, "keep.txt"), "w") as f:
            f.write("x")
        self.fails([ck, self.cfg, out], 1, "convert-checkpoint: %s: exists and is not empty "
                   "(--force replaces model.safetensors and config.json in it)" % out, out)
        _, st = self.convert_ok(ck, out, "--force")
        self.assertEqual(sorted(os.listdir(out)), ["config.json", "keep.txt", "model.safetensors"])
        self.assert_same_tensors(st, SOURCE)

    def test_empty_outdir_is_used(self):
        ck = self.p("ck.pth")
        write_torch_zip(ck, lambda s: checkpoint(SOURCE, s))
        out = self.p("empty")
        os.makedirs(out)
        self.convert_ok(ck, out)

    def test_usage_and_help(self):
        rc, so, se = self.run_tool()
        self.assertEqual(rc, 2)
        self.assertEqual(len(se.splitlines()), 1)
        self.assertTrue(se.startswith("convert-checkpoint: usage: "), se)
        rc, so, se = self.run_tool("--help")
        self.assertEqual(rc, 0)
        for word in ("CHECKPOINT", "CONFIG", "OUTDIR", "--force", "--no-check", "--arch",
                     "config.json", "model.safetensors", "sha256", "F16", "D2SwinTransformer",
                     "_BASE_", "exit"):
            self.assertIn(word, so)

    def test_runs_as_a_command(self):
        if not os.access(TOOL, os.X_OK):
            self.skipTest("tools/convert-checkpoint is not executable here")
        rc, so, se = self.run_tool("--help", direct=True)
        self.assertEqual(rc, 0, se)

    def test_missing_checkpoint(self):
        out = self.p("out")
        self.fails([self.p("none.pth"), self.cfg, out], 1,
                   "convert-checkpoint: %s: no such file" % self.p("none.pth"), out)


REAL_GEN = r"""
import json, pickle, sys, torch
out = sys.argv[1]
torch.manual_seed(0)
base = torch.randn(64)
p = torch.nn.Parameter(torch.randn(2, 2))
sd = {"w": torch.randn(5, 7), "wt": torch.randn(7, 5).t(), "a": base[0:10],
      "b": base[10:30].view(4, 5), "step": base[::3], "exp": torch.randn(3, 1).expand(3, 4),
      "half": torch.randn(2, 3).half(), "bf16": torch.randn(3, 2).bfloat16().t(),
      "f64": torch.randn(4).double(), "idx": torch.arange(16).view(4, 4).t(),
      "i32": torch.tensor([1, -2, 3], dtype=torch.int32),
      "u8": torch.tensor([0, 255], dtype=torch.uint8), "bool": torch.tensor([True, False]),
      "scalar": torch.tensor(3.5), "empty": torch.zeros(0, 3), "param": p}
opt = torch.optim.SGD([p], lr=0.1, momentum=0.9).state_dict()
torch.save({"model": sd, "iteration": 3, "optimizer": opt}, out + "/zip.pth")
torch.save({"model": sd, "iteration": 3}, out + "/legacy.pth",
           _use_new_zipfile_serialization=False)
names = {torch.float32: "F32", torch.float16: "F16", torch.bfloat16: "BF16",
         torch.float64: "F64", torch.int64: "I64", torch.int32: "I32", torch.uint8: "U8",
         torch.bool: "BOOL"}
ref = {}
for k, t in sd.items():
    t = t.detach().contiguous()
    raw = (t.view(torch.int16) if t.dtype == torch.bfloat16 else t).numpy().tobytes()
    ref[k] = [names[t.dtype], list(t.shape), raw.hex()]
json.dump(ref, open(out + "/ref.json", "w"))
arrays = {k: v.detach().numpy() for k, v in sd.items() if k != "bf16"}
arrays["w_big"] = sd["w"].numpy().astype(">f4")
for proto in (2, 4, 5):
    with open(out + "/np%d.pkl" % proto, "wb") as f:
        pickle.dump({"model": arrays, "__author__": "numpy"}, f, protocol=proto)
"""


class TestRealTorch(Base):
    """Files written by torch.save and by pickle of numpy arrays themselves,
    where an interpreter here has torch and numpy (Debian's python3-torch);
    skipped otherwise."""

    def test_real_files(self):
        py = None
        for cand in (sys.executable, "/usr/bin/python3", shutil.which("python3")):
            if cand and os.path.exists(cand) and subprocess.run(
                    [cand, "-c", "import torch, numpy"], stdout=subprocess.DEVNULL,
                    stderr=subprocess.DEVNULL).returncode == 0:
                py = cand
                break
        if py is None:
            self.skipTest("no python3 with torch and numpy")
        subprocess.run([py, "-c", REAL_GEN, self.dir], check=True)
        ref = json.loads(slurp(self.p("ref.json"), "r"))
        for name in ("zip.pth", "legacy.pth", "np2.pkl", "np4.pkl", "np5.pkl"):
            want = dict(ref)
            if name.endswith(".pkl"):
                del want["bf16"]
                want["w_big"] = ref["w"]
            cfg, st = self.convert_ok(self.p(name), self.p("out-" + name), "--no-check")
            got = tensors_of(st)
            self.assertEqual(sorted(got), sorted(want), name)
            for k, (dtype, shape, data) in want.items():
                self.assertEqual([got[k][0], list(got[k][1]), got[k][2].hex()],
                                 [dtype, shape, data], "%s: %s" % (name, k))
            self.assert_header(st, self.p(name))


class TestAgainstVpeft(Base):
    """model.safetensors is the file vpeft's own writer (vp_st_write) makes of
    the same tensors and metadata: needs a built libvpeft.so (cwd or the
    repository root), skipped without one."""

    def test_same_bytes_as_vp_st_write(self):
        lib = next((p for p in (os.path.abspath("libvpeft.so"), os.path.join(ROOT, "libvpeft.so"))
                    if os.path.exists(p)), None)
        if lib is None:
            self.skipTest("no libvpeft.so built")
        try:
            vp = ctypes.CDLL(lib)
        except OSError as e:
            self.skipTest("cannot load %s: %s" % (lib, e))
        t = dict(SOURCE)
        t["extra.half"] = ("F16", (3,), bytes(6))
        ck = self.p("ck.pth")
        write_torch_zip(ck, lambda s: torch_tensors(s, t))
        _, st = self.convert_ok(ck, self.p("out"))
        header, _, _, _ = read_safetensors(st)

        class Entry(ctypes.Structure):
            _fields_ = [("name", ctypes.c_char_p), ("dtype", ctypes.c_int), ("ndim", ctypes.c_int),
                        ("shape", ctypes.POINTER(ctypes.c_int64)), ("data", ctypes.c_void_p)]

        class KV(ctypes.Structure):
            _fields_ = [("key", ctypes.c_char_p), ("value", ctypes.c_char_p)]

        codes = {"F16": 7, "F32": 11, "I64": 12}
        keep, entries = [], (Entry * len(t))()
        for i, (name, (dtype, shape, data)) in enumerate(t.items()):
            shp = (ctypes.c_int64 * max(1, len(shape)))(*shape)
            buf = ctypes.create_string_buffer(data, max(1, len(data)))
            keep += [shp, buf]
            entries[i] = Entry(name.encode(), codes[dtype], len(shape), shp,
                               ctypes.cast(buf, ctypes.c_void_p))
        meta = header["__metadata__"]
        kvs = (KV * 2)(*(KV(k.encode(), meta[k].encode()) for k in ("source", "sha256")))
        ref = self.p("ref.safetensors")
        vp.vp_st_write.argtypes = [ctypes.c_char_p, ctypes.c_void_p, ctypes.c_size_t,
                                   ctypes.c_void_p, ctypes.c_size_t]
        self.assertEqual(vp.vp_st_write(ref.encode(), ctypes.cast(entries, ctypes.c_void_p),
                                        len(t), ctypes.cast(kvs, ctypes.c_void_p), 2), 0)
        self.assertTrue(slurp(ref) == slurp(st),
                        "model.safetensors differs from vp_st_write's file")


if __name__ == "__main__":
    unittest.main(verbosity=1)
