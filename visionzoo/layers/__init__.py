"""Building blocks shared by the model families; each block is defined once, here."""
from .activations import create_act_layer, get_act_layer
from .config import is_exportable, is_no_jit, is_scriptable, set_layer_config, use_fused_attn
from .conv_norm_act import ConvNormAct
from .drop import DropBlock2d, DropPath, drop_path
from .helpers import make_divisible, to_2tuple, to_ntuple
from .mlp import GluMlp, Mlp, SwiGLU
from .norm import GroupNorm, GroupNorm1, LayerNorm, LayerNorm2d, get_norm_layer
from .padding import Conv2dSame, create_conv2d_pad, create_pool2d, get_padding, get_padding_value, pad_same
from .pool import ClassifierHead, NormMlpClassifierHead, SelectAdaptivePool2d, create_classifier
from .squeeze_excite import EcaModule, EffectiveSEModule, SEModule, create_attn, get_attn
from .weight_init import lecun_normal_, trunc_normal_, variance_scaling_
