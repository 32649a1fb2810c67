"""Layers: finding a CAM target layer, probing it, reading its output as a map, splitting there.

* `lookup`   resolve_layer(model, "layer4[-1]") -> (canonical name, module); list_layers.
* `defaults` DEFAULT_RULES, the default layer of each family recognised by structure.
* `probe`    check_layer (one dry forward pass; LayerError, one line), probe_layers
             (`camscope layers`), default_layer.
* `layout`   how a layer's output reads as (N, C, h, w) and back: Layout (channels-first,
             channels-last, tokens), CustomLayout (a user's reshape_transform, inverse derived),
             one protocol MapLayout; detect_layout, spatial_view.
* `split`    split_model -> FeatureRunner: FxSplit (torch.fx head/tail), HookRunner fallback.

This package imports only torch and `camscope.errors`; models, methods and the run import it.
"""

from camscope.errors import LayerError
from camscope.layers.defaults import DEFAULT_RULES, DefaultRule, layer_by_structure
from camscope.layers.layout import (
    CustomLayout,
    Layout,
    LayoutError,
    MapLayout,
    detect_layout,
    model_token_grid,
    read_transform,
    spatial_view,
)
from camscope.layers.lookup import list_layers, resolve_layer
from camscope.layers.probe import (
    LayerCheck,
    LayerProbe,
    check_layer,
    default_layer,
    input_channels,
    probe_layers,
    zero_image,
)
from camscope.layers.split import (
    FeatureRunner,
    FxSplit,
    HookRunner,
    LayerRun,
    SplitError,
    split_model,
)

__all__ = [
    "DEFAULT_RULES",
    "CustomLayout",
    "DefaultRule",
    "FeatureRunner",
    "FxSplit",
    "HookRunner",
    "LayerCheck",
    "LayerError",
    "LayerProbe",
    "LayerRun",
    "Layout",
    "LayoutError",
    "MapLayout",
    "SplitError",
    "check_layer",
    "default_layer",
    "detect_layout",
    "input_channels",
    "layer_by_structure",
    "list_layers",
    "model_token_grid",
    "probe_layers",
    "read_transform",
    "resolve_layer",
    "spatial_view",
    "split_model",
    "zero_image",
]
