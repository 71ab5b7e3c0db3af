"""tests/data/maskdino-swinl/dump_keys.py: state_dict.tsv, the key list
(name, dtype, shape) of the released Swin-L Mask DINO as the repository's
own code builds it from config.json's MODEL, with tools/make-maskdino-
reference's stand-ins for detectron2 (no checkpoint, no forward pass):

    /usr/bin/python3 tests/data/maskdino-swinl/dump_keys.py   (torch needed)

It prints the counts (816 entries; model.parameters() 222,799,144 elements)
and the alias groups. The config's DROP_PATH_RATE 0.3 needs a DropPath
(parameter-free, as timm's), which the reference tool's stand-ins refuse."""
import importlib.machinery, importlib.util, json, os, sys, tempfile, warnings, contextlib, io
import torch
from torch import nn
HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(os.path.dirname(HERE)))
path = os.path.join(ROOT, "tools", "make-maskdino-reference")
loader = importlib.machinery.SourceFileLoader("mmr", path)
spec = importlib.util.spec_from_loader("mmr", loader)
mmr = importlib.util.module_from_spec(spec); loader.exec_module(mmr)
sys.dont_write_bytecode = True
warnings.filterwarnings("ignore", message="torch.meshgrid")
warnings.filterwarnings("ignore", category=SyntaxWarning)
model_cfg = json.load(open(os.path.join(HERE, "config.json")))["MODEL"]
cfg = mmr.Cfg(MODEL=model_cfg)

class DropPath(nn.Module):  # parameter-free, as timm's; only needed because DROP_PATH_RATE=0.3
    def __init__(self, drop_prob=None):
        super().__init__(); self.drop_prob = drop_prob
    def forward(self, x):
        if self.drop_prob == 0. or not self.training: return x
        keep = 1 - self.drop_prob
        m = x.new_empty((x.shape[0],) + (1,) * (x.ndim - 1)).bernoulli_(keep)
        return x * m / keep

with tempfile.TemporaryDirectory() as tmp:
    mmr.install_stubs()
    if "--no-droppath-fix" not in sys.argv:
        sys.modules["timm.models.layers"].DropPath = DropPath
    md = mmr.import_maskdino(mmr.maskdino_source(mmr.DEFAULT_MASKDINO, tmp))
    torch.manual_seed(0)
    model = mmr.build(md, cfg)

sd = model.state_dict()
with open(os.path.join(HERE, "state_dict.tsv"), "w") as f:
    for k, v in sd.items():
        f.write("%s\t%s\t%s\n" % (k, str(v.dtype).replace("torch.", ""), ",".join(map(str, v.shape))))
nparam = sum(p.numel() for p in model.parameters())
print("state_dict entries:", len(sd))
print("model.parameters() numel:", nparam, "count", len(list(model.parameters())))
print("named_parameters (remove_duplicate=False):", len(list(model.named_parameters(remove_duplicate=False))) if 'remove_duplicate' in model.named_parameters.__code__.co_varnames else "n/a")
# aliases
by_ptr = {}
for k, v in sd.items():
    by_ptr.setdefault((v.data_ptr(), v.dtype, tuple(v.shape), v.stride()), []).append(k)
groups = [g for g in by_ptr.values() if len(g) > 1]
print("alias groups:", len(groups))
for g in groups: print("  ", g)
float_sd_numel_unique = sum(sd[g[0]].numel() for g in by_ptr.values() if sd[g[0]].is_floating_point())
print("unique float tensors numel in state_dict:", float_sd_numel_unique)
print("all-entries numel:", sum(v.numel() for v in sd.values()))
nonfloat = [(k, v.dtype, tuple(v.shape)) for k, v in sd.items() if not v.is_floating_point()]
print("non-float entries:", len(nonfloat), set(str(d) for _, d, _ in nonfloat))
bufs = [k for k, _ in model.named_buffers()]
print("buffers:", len(bufs), [b for b in bufs if "relative_position_index" not in b])
print("input_proj:", len(model.sem_seg_head.predictor.input_proj), [len(p) for p in model.sem_seg_head.predictor.input_proj])
print("backbone dpr sample:", type(model.backbone.layers[2].blocks[5].drop_path).__name__)
