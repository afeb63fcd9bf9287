"""The one place that loads pretrained weights.

Each network takes a weights setting: the name of its published weights (downloaded once into the
library's own cache, by the library's own mechanism; for the ViTs, a Hugging Face hub id), a path to a local
copy (offline machines, Kaggle kernels), or 'none': untrained weights, seeded so that two runs give the
same numbers (tests only). A download that fails is one line that says what to do, never a traceback.

    python -m common.weights face vggface2   # exit 0 where the VGGFace2 weights can be had, else 3
    python -m common.weights gend            # GenD's CLIP ViT-L/14 (yermandy/GenD_CLIP_L_14)
    python -m common.weights gend_dinov3     # GenD's DINOv3 ViT-L/16 (yermandy/GenD_DINOv3_L)
    python -m common.weights gend_pe         # GenD's Perception Encoder ViT-L/14 (yermandy/GenD_PE_L)
    python -m common.weights audio_cnn imagenet
"""
import contextlib
import hashlib
import json
import os
import re
import sys
import warnings

import torch
from torch import nn

from common.config import UserError
from common.files import stamp, stamps

UNTRAINED_SEED = 0



# ViT face encoders (DetectionPipeline's FACE_ENCODER other than 'facenet'): their published weights (a hub
# id), the backbone a checkpoint without a config.json is, where the vision tower's tensors are in their
# checkpoint, their head's, and the tensors they hold that the encoder does not use (GenD keeps CLIP's visual
# projection; OpenAI's CLIP holds its text tower too)
VIT_ENCODERS = {
    'gend': dict(default='yermandy/GenD_CLIP_L_14', backbone='openai/clip-vit-large-patch14',
                 vision='feature_extractor.vision_model.', head='model.linear.',
                 unused=('feature_extractor.visual_projection.',)),
    'gend_dinov3': dict(default='yermandy/GenD_DINOv3_L', backbone='facebook/dinov3-vitl16-pretrain-lvd1689m',
                        vision='feature_extractor.backbone.', head='model.linear.', unused=()),
    'gend_pe': dict(default='yermandy/GenD_PE_L', backbone='vit_pe_core_large_patch14_336',
                    vision='feature_extractor.backbone.', head='model.linear.', unused=()),
    'clip': dict(default='openai/clip-vit-large-patch14', backbone='openai/clip-vit-large-patch14',
                 vision='vision_model.', head=None,
                 unused=('text_model.', 'text_projection.', 'visual_projection.', 'logit_scale')),
}
# The backbones a GenD config.json names (it gives no sizes): their architecture, transformers'
# CLIPVisionModel or DINOv3ViTModel, and its config (DINOv3's: transformers' conversion of facebook's
# ViT-L/16, convert_dinov3_vit_to_hf.py), or timm's Eva, which GenD builds for PE as timm.create_model(name,
# dynamic_img_size=True) without its head (timm's registry holds its sizes); a config.json with a
# 'vision_config' (OpenAI's CLIPConfig, a small test model) gives its own (for timm: keyword arguments)
VIT_BACKBONES = {
    'openai/clip-vit-large-patch14': ('clip', dict(
        hidden_size=1024, intermediate_size=4096, num_hidden_layers=24, num_attention_heads=16, patch_size=14,
        image_size=224, projection_dim=768, hidden_act='quick_gelu', layer_norm_eps=1e-5)),
    'facebook/dinov3-vitl16-pretrain-lvd1689m': ('dinov3', dict(
        hidden_size=1024, intermediate_size=4096, num_hidden_layers=24, num_attention_heads=16, patch_size=16,
        image_size=224, num_register_tokens=4, layerscale_value=1.0, layer_norm_eps=1e-5, rope_theta=100.0)),
    'vit_pe_core_large_patch14_336': ('pe', {}),
}
# the encoders with a head, which scores a video without training (GenD's)
HEAD_ENCODERS = tuple(name for name, spec in VIT_ENCODERS.items() if spec['head'])
# buffers a checkpoint may hold (older transformers saved position_ids) that the models compute from their config
OLD_BUFFERS = ('embeddings.position_ids', 'rope_embeddings.inv_freq')
FACE_ENCODERS = ('facenet', *VIT_ENCODERS)


def default_weights(encoder='facenet'):
    """The published weights FACE_WEIGHTS='default' stands for."""
    return 'vggface2' if encoder == 'facenet' else VIT_ENCODERS[encoder]['default']


def has_head(encoder):
    """Whether the face encoder scores faces itself (GenD's: a FAKE logit a face), so a video without training."""
    return encoder in HEAD_ENCODERS


def weights_stamp(weights):
    """[size, mtime] of a local weights file (a folder's checkpoint, as vit_encoder reads it); a sharded one's
    index and shards, {path: [size, mtime] or None}: a shard downloaded again under an unchanged index (new
    weights of the same shapes) is other weights. None for a hub id, a name or 'none'."""
    path = _checkpoint_in(weights) if os.path.isdir(weights) else weights
    if not (path and os.path.isfile(path)):
        return None
    return stamps([path, *_shards(path)]) if path.endswith('.index.json') else stamp(path)


def describe(weights, encoder='facenet'):
    """What a table records as the embedder: the weights' name, a file name, or the untrained seed; a ViT
    encoder's prefixed by its name ('gend:yermandy/GenD_CLIP_L_14', 'gend:untrained(seed=0)')."""
    if weights == 'default':
        weights = default_weights(encoder)
    if weights == 'none':
        name = f'untrained(seed={UNTRAINED_SEED})'
    elif os.path.exists(weights):
        name = f'file:{os.path.basename(os.path.normpath(weights))}'
    else:
        name = weights
    return name if encoder == 'facenet' else f'{encoder}:{name}'


def tensors_digest(module):
    """sha256 (hex) of a network's tensors, their names, types and shapes: the weights themselves, whatever name or
    file they were loaded from (a hub id and its local copy, a .bin of the same tensors give one digest), so that
    predict.py and test.py tell the same weights from other weights under the same name (model.check_embedder)."""
    digest = hashlib.sha256()
    for name, tensor in sorted(module.state_dict().items()):
        tensor = tensor.detach().cpu().contiguous()
        digest.update(f'{name} {tensor.dtype} {tuple(tensor.shape)};'.encode())
        digest.update(tensor.reshape(-1).view(torch.uint8).numpy())
    return digest.hexdigest()


def _load_file(path, todo=''):
    """The state dict torch.save wrote at `path` (a checkpoint's 'state_dict'); else UserError, ending with `todo`."""
    try:
        state = torch.load(path, map_location='cpu', weights_only=True)
    except Exception as err:  # noqa: BLE001 - a corrupt file makes torch.load raise whatever its unpickler hits
        first = (str(err).strip().splitlines() or [''])[0]  # torch's unpickling errors run to 10 lines
        if first.startswith('Weights only load failed'):  # its advice, weights_only=False, would run the file's code
            first = 'not a file of tensors alone (a state dict saved by torch.save); nothing else is loaded'
        raise UserError(f'cannot read weights file {path}: {type(err).__name__} {first}{todo}') from None
    if isinstance(state, dict) and 'state_dict' in state:
        state = state['state_dict']
    if not isinstance(state, dict) or not all(isinstance(k, str) for k in state):  # a list, a tensor, None
        raise UserError(f'{path}: holds a {type(state).__name__}' + (' whose keys are not all names' if
                        isinstance(state, dict) else '') + f', not a state dict{todo}')
    return state


def _why_not(err):
    """The first reason of load_state_dict's error (its first line only says that there are some), shortened."""
    lines = [line.strip() for line in str(err).strip().splitlines()]
    why = lines[1] if len(lines) > 1 else lines[0]
    return why if len(why) <= 160 else why[:157] + '...'


FACENET_FILES = {'vggface2': '20180402-114759-vggface2.pt', 'casia-webface': '20180408-102900-casia-webface.pt'}


def face_embedder(weights='vggface2'):
    """InceptionResnetV1 returning the 512-d embedding *before* its L2 normalisation (eval mode, CPU).

    weights: 'vggface2' (or 'default') | 'casia-webface' (facenet-pytorch's download into
    $TORCH_HOME/checkpoints), a path to such a .pt file, or 'none' (untrained, seeded).
    """
    from facenet_pytorch import InceptionResnetV1
    if weights == 'default':
        weights = default_weights('facenet')
    if weights == 'none':
        torch.manual_seed(UNTRAINED_SEED)
        model = InceptionResnetV1(pretrained=None)
    elif os.path.isfile(weights):
        model = InceptionResnetV1(pretrained=None)
        state = {k: v for k, v in _load_file(weights, ' (a damaged or partial copy: download it again)').items()
                 if not k.startswith('logits.')}
        try:
            model.load_state_dict(state)
        except RuntimeError as err:
            raise UserError(f'{weights} is not an InceptionResnetV1 state dict ({_why_not(err)}): give '
                            f'facenet-pytorch\'s weights file (20180402-114759-vggface2.pt)') from None
    elif weights in ('vggface2', 'casia-webface'):
        try:
            model = InceptionResnetV1(pretrained=weights)
        except (OSError, RuntimeError) as err:  # URLError is an OSError
            from facenet_pytorch.models.inception_resnet_v1 import get_torch_home
            cache = os.path.join(get_torch_home(), 'checkpoints')
            raise UserError(
                f'cannot download the {weights} weights ({type(err).__name__}: {str(err)[:80]}); '
                f'put {FACENET_FILES[weights]} in {cache} or pass --face_weights=/path/to/it.pt '
                f'(or --face_weights=none for an untrained embedder)') from None
    else:
        raise UserError(f'--face_weights={weights!r}: not a file, and not one of vggface2, '
                        f'casia-webface, none')
    # The 512-d output of last_bn, before F.normalize: the classifier head becomes the identity.
    model.classify = True
    model.logits = nn.Identity()
    return model.eval()


def _hub_files(repo, flag):
    """(config.json, model.safetensors) of hub repo `repo`, downloaded once into huggingface_hub's cache."""
    import huggingface_hub
    try:
        return tuple(huggingface_hub.hf_hub_download(repo, name) for name in ('config.json', 'model.safetensors'))
    except (OSError, ValueError, huggingface_hub.errors.HfHubHTTPError) as err:  # offline: LocalEntryNotFoundError
        first = (str(err).strip().splitlines() or [''])[0][:100]
        raise UserError(
            f'cannot download {repo} from the Hugging Face hub ({type(err).__name__}: {first}); on a machine '
            f'with internet run `hf download {repo} --local-dir DIR`, copy DIR here and pass {flag}=DIR '
            f'(or {flag}=none for untrained weights)') from None


# a folder's checkpoint, in the order transformers' from_pretrained takes them: the hub's file, a sharded one's
# index (large models), PyTorch's pickle (older repos, Kaggle copies); each index names its shards
CHECKPOINTS = ('model.safetensors', 'model.safetensors.index.json', 'pytorch_model.bin', 'pytorch_model.bin.index.json')


def _checkpoint_in(folder):
    """The first of CHECKPOINTS in `folder`, or None."""
    return next((p for p in (os.path.join(folder, n) for n in CHECKPOINTS) if os.path.isfile(p)), None)


def _vit_files(weights, flag, repo):
    """(config.json or None, the checkpoint: CHECKPOINTS') for a folder, a checkpoint file or a hub id (`repo`:
    the encoder's own, named where a folder lacks them)."""
    if os.path.isdir(weights):
        files = [os.path.join(weights, 'config.json'), _checkpoint_in(weights)]
        if not (os.path.isfile(files[0]) and files[1]):
            raise UserError(f'{flag}={weights}: a folder of ViT weights holds config.json and model.safetensors '
                            f'(as the hub has them: hf download {repo} --local-dir {weights})')
        return files
    if os.path.isfile(weights) and weights.endswith('.json') and not weights.endswith('.index.json'):
        raise UserError(f'{flag}={weights} is a folder\'s {os.path.basename(weights)}, not its weights: give the '
                        f'folder ({os.path.dirname(weights) or "."}) or its model.safetensors')
    if os.path.isfile(weights):
        beside = os.path.join(os.path.dirname(weights), 'config.json')
        return (beside if os.path.isfile(beside) else None), weights
    # a hub id is owner/name in the hub's characters; a path that is not here, as a mistyped one in a folder that
    # is (models/GenD_CLIP_L14), is said to be missing, not downloaded
    hub_id, owner = re.fullmatch(r'[\w-][\w.-]*/[\w.-]+', weights, re.ASCII), weights.split('/')[0]
    if hub_id and not os.path.isdir(owner):
        return _hub_files(weights, flag)
    here = f' ({owner}/ is a folder here: not taken for a hub id)' if hub_id else ''
    raise UserError(f'{flag}={weights!r}: not a folder, a checkpoint file, a hub id (owner/name), '
                    f'default or none{here}')


def _read_config(path):
    """config.json as a dict whose backbone (where given) is a name and vision_config sizes; else UserError."""
    try:
        with open(path, encoding='utf-8') as f:
            config = json.load(f)
    except (OSError, ValueError) as err:
        raise UserError(f'cannot read {path}: {type(err).__name__}: {err}') from None
    for key, kind in ((None, dict), ('backbone', str), ('vision_config', dict)):
        value = config if key is None else config.get(key, kind())
        if not isinstance(value, kind):
            raise UserError(f'{path}: {"its " + key if key else "the file"} is {json.dumps(value)[:60]}, not a '
                            f'JSON {"string" if kind is str else "object"}')
    return config


def _shards(path):
    """The checkpoint files of `path`: itself, or the shards its index (*.index.json, transformers') names."""
    if not path.endswith('.index.json'):
        return [path]
    try:
        with open(path, encoding='utf-8') as f:
            names = set(json.load(f)['weight_map'].values())
    except (OSError, ValueError, KeyError, TypeError, AttributeError) as err:  # not JSON, or no {name: shard}
        raise UserError(f'cannot read {path}: {type(err).__name__}: {err} (a sharded checkpoint\'s index maps '
                        f'each tensor to its file in "weight_map")') from None
    return [os.path.join(os.path.dirname(path), str(name)) for name in sorted(names, key=str)]


def _vit_state(path, spec, expected):
    """The tensors of `expected` (names in the checkpoint) from checkpoint `path` (CHECKPOINTS'); UserError
    naming a tensor that is missing, or one the checkpoint holds that the encoder neither uses nor knows to
    leave, or a file that cannot be read."""
    from safetensors import SafetensorError, safe_open
    todo = f' (a damaged or partial copy: download it again, as hf download {spec["default"]} --local-dir DIR does)'
    file = path
    try:
        with contextlib.ExitStack() as stack:
            read = {}  # name -> the function that reads its tensor (safetensors reads only those asked for)
            for file in _shards(path):
                if not file.endswith('.safetensors'):  # torch.save's: pytorch_model.bin, a .pt or .pth of one
                    state = _load_file(file, todo)
                    read.update(dict.fromkeys(state, state.__getitem__))
                else:
                    f = stack.enter_context(safe_open(file, framework='pt'))
                    read.update(dict.fromkeys(f.keys(), f.get_tensor))
            names = set(read)
            # transformers < 5 saved DINOv3's blocks as `layer.N.`, now `model.layer.N.` (its own loader renames
            # them as this does: transformers/conversion_mapping.py)
            stored = {n: n if n in names else n.replace('.model.layer.', '.layer.') for n in expected}
            missing = sorted(n for n in expected if stored[n] not in names)
            unexpected = sorted(n for n in names - set(stored.values()) if not n.startswith(spec['unused'])
                                and not n.endswith(OLD_BUFFERS))
            if missing or unexpected:
                which, listed = ('missing', missing) if missing else ('unexpected', unexpected)
                more = f' (and {len(listed) - 1} more)' if len(listed) > 1 else ''
                # GenD's CLIP and OpenAI's have one config.json backbone: their tensors' names tell them apart
                readers = [e for e, s in VIT_ENCODERS.items() if e != spec['name']
                           and not any(n.startswith(spec['vision']) for n in names)
                           and any(n.startswith(s['vision']) for n in names)]
                read_by = f' (its tensors are read by --face_encoder={" or ".join(readers)})' if readers else ''
                raise UserError(f'{path}: tensor {listed[0]} {which}{more}: not the checkpoint of a '
                                f'{spec["name"]} encoder with this config{read_by}')
            return {n: read[stored[n]](stored[n]) for n in expected}
    except (OSError, SafetensorError) as err:  # a partial download, an HTML page saved under its name
        raise UserError(f'cannot read weights file {file}: {type(err).__name__}: {err}{todo}') from None


def vit_encoder(encoder='gend', weights='default', flag='--face_weights'):
    """faces/clip.py's VitEncoder (eval mode, CPU): transformers' CLIPVisionModel or DINOv3ViTModel, or timm's
    Eva (the encoder's backbone: VIT_BACKBONES), and GenD's head for GenD's encoders.

    weights: 'default' (the encoder's hub id: VIT_ENCODERS), a hub id (downloaded once into
    huggingface_hub's cache), a folder with config.json and model.safetensors as the hub has them (or another
    of CHECKPOINTS: shards, pytorch_model.bin), a checkpoint file (config.json beside it, else the encoder's
    backbone), or 'none' (the encoder's backbone, untrained, seeded). Only the vision tower (and head) are read;
    a tensor missing or unknown, or a file that cannot be read, is a UserError.
    """
    from faces.clip import VitEncoder
    spec = {**VIT_ENCODERS[encoder], 'name': encoder}
    if weights == 'default':
        weights = spec['default']
    config, path = {}, None
    if weights != 'none':
        config_path, path = _vit_files(weights, flag, spec['default'])
        config = _read_config(config_path) if config_path else {}
    backbone = config.get('backbone', spec['backbone'])
    arch = VIT_BACKBONES[spec['backbone']][0]
    if VIT_BACKBONES.get(backbone, ('',))[0] != arch:  # a vision_config gives sizes, not another architecture
        readers = [e for e, s in VIT_ENCODERS.items() if s['backbone'] == backbone]
        raise UserError(f'{weights}: config.json names backbone {backbone!r}, '
                        + (f'read by --face_encoder={readers[0]}' if readers else 'not one of '
                           + ', '.join(b for b, (a, _) in VIT_BACKBONES.items() if a == arch)))
    if spec['head'] and config.get('head', 'LinearNorm') != 'LinearNorm':
        raise UserError(f'{weights}: config.json has head {config["head"]!r}; GenD\'s checkpoints have '
                        f'LinearNorm (a linear layer over the L2-normalised features), the only head read here')
    from huggingface_hub.errors import StrictDataclassError  # transformers' configs check their fields' types
    try:
        vision = _vit_model(arch, backbone, config.get('vision_config'), path is not None)
    # a size timm's or transformers' model refuses; a hidden_act transformers does not have (its ACT2FN[name])
    except (TypeError, ValueError, KeyError, StrictDataclassError) as err:
        if 'vision_config' not in config:
            raise
        raise UserError(f'{weights}: config.json\'s vision_config does not build {backbone} '
                        f'({type(err).__name__}: {err})') from None
    ours = VitEncoder(vision, bool(spec['head']), describe(weights, encoder), arch)  # its head: seeded after
    if path is not None:
        parts = [(vision, spec['vision'])] + ([(ours.head, spec['head'])] if spec['head'] else [])
        state = _vit_state(path, spec, [prefix + k for module, prefix in parts for k in module.state_dict()])
        for module, prefix in parts:
            try:
                module.load_state_dict({k[len(prefix):]: v for k, v in state.items() if k.startswith(prefix)})
            except RuntimeError as err:  # a tensor of another shape
                lines = str(err).strip().splitlines()
                first = (lines[1:] or lines)[0].strip().replace('size mismatch for ', f'size mismatch for {prefix}')
                raise UserError(f'{path}: {first}') from None
    return ours.eval()


def _vit_model(arch, backbone, sizes, loaded):
    """The vision tower, seeded; `sizes`: a config.json's vision_config (else VIT_BACKBONES'); `loaded`: every
    tensor is replaced next, so transformers' random init is skipped."""
    torch.manual_seed(UNTRAINED_SEED)
    if arch == 'pe':
        import timm
        return timm.create_model(backbone, pretrained=False, dynamic_img_size=True, num_classes=0, **(sizes or {}))
    from transformers import CLIPVisionConfig, CLIPVisionModel, DINOv3ViTConfig, DINOv3ViTModel
    from transformers.initialization import no_init_weights
    from transformers.utils import logging as hf_logging
    hf_logging.set_verbosity_error()  # transformers' notes on the config's unused keys
    make_config, model = {'clip': (CLIPVisionConfig, CLIPVisionModel),
                           'dinov3': (DINOv3ViTConfig, DINOv3ViTModel)}[arch]
    # its random init costs 3 s for ViT-L/14
    with no_init_weights() if loaded else contextlib.nullcontext():
        return model(make_config(**(sizes or VIT_BACKBONES[backbone][1])))


# torchvision CNNs whose classifier is one `fc` layer over globally pooled features: the pooled
# features are the embedding, and any input height and width works (adaptive average pooling).
AUDIO_CNN_ARCHS = ('resnet18', 'resnet34', 'resnet50', 'resnext50_32x4d', 'resnext101_32x8d')


def audio_cnn(weights='imagenet', arch='resnet18'):
    """A torchvision ImageNet CNN without its classifier: (batch, 3, H, W) -> (batch, D) pooled features.

    weights: 'imagenet' (the arch's DEFAULT torchvision weights, downloaded once by torchvision into
    $TORCH_HOME/hub/checkpoints), the name of one of the arch's torchvision weights ('IMAGENET1K_V2'),
    a path to a state dict of the arch (its `fc.*` entries are ignored), or 'none' (untrained, seeded).
    The model carries `embedding_dim` (D) and `weights_name` (what a table records).
    """
    import torchvision
    if arch not in AUDIO_CNN_ARCHS:
        raise UserError(f'--cnn_arch={arch!r}: not one of {", ".join(AUDIO_CNN_ARCHS)}')
    state = None
    if weights == 'none':
        torch.manual_seed(UNTRAINED_SEED)
        model, name = torchvision.models.get_model(arch, weights=None), describe(weights)
    elif os.path.isfile(weights):
        model, name = torchvision.models.get_model(arch, weights=None), describe(weights)
        state = {k: v for k, v in _load_file(weights).items() if not k.startswith('fc.')}
    else:
        enum = torchvision.models.get_model_weights(arch)
        names = [w.name for w in enum]
        if weights != 'imagenet' and weights not in names:
            raise UserError(f'--cnn_weights={weights!r}: not a file, and not one of imagenet, '
                            f'{", ".join(names)}, none')
        chosen = enum.DEFAULT if weights == 'imagenet' else enum[weights]
        try:
            model = torchvision.models.get_model(arch, weights=chosen)
        except (OSError, RuntimeError) as err:  # URLError is an OSError; a bad hash is a RuntimeError
            cache = os.path.join(torch.hub.get_dir(), 'checkpoints')
            raise UserError(
                f'cannot download the {arch} {chosen.name} weights ({type(err).__name__}: {str(err)[:80]}); '
                f'put {os.path.basename(chosen.url)} in {cache} or pass --cnn_weights=/path/to/it.pth '
                f'(or --cnn_weights=none for an untrained CNN)') from None
        name = f'{type(chosen).__name__}.{chosen.name}'
    model.embedding_dim = model.fc.in_features
    model.weights_name = name
    model.fc = nn.Identity()  # the ImageNet classifier goes: the pooled features are the embedding
    if state is not None:
        try:
            model.load_state_dict(state)
        except RuntimeError as err:
            raise UserError(f'{weights} is not a {arch} state dict ({_why_not(err)}): give the --cnn_arch of its '
                            f'network, or a torchvision {arch} file') from None
    return model.eval()


def _resemblyzer():
    with warnings.catch_warnings():
        # webrtcvad, which Resemblyzer imports, imports pkg_resources, which warns of its own removal;
        # Resemblyzer imports binary_dilation from scipy's old namespace: both work with the pinned versions
        warnings.filterwarnings('ignore', message='pkg_resources is deprecated', category=UserWarning)
        warnings.filterwarnings('ignore', message='Please import `binary_dilation`',
                                category=DeprecationWarning)
        import resemblyzer
    return resemblyzer


def voice_encoder(weights='resemblyzer', device='cpu'):
    """Resemblyzer's VoiceEncoder: (batch, frames, 40) mel -> (batch, 256) L2-normalised; eval mode.

    weights: 'resemblyzer' (the pretrained.pt its package ships: no download, works offline) or a path
    to a checkpoint of the same network.
    """
    resemblyzer = _resemblyzer()
    path = (os.path.join(os.path.dirname(resemblyzer.__file__), 'pretrained.pt')
            if weights == 'resemblyzer' else weights)
    if not os.path.isfile(path):
        raise UserError(f'no voice encoder weights at {path} (reinstall Resemblyzer==0.1.4, '
                        f'or pass a checkpoint path)')
    if 'model_state' not in _load_file(path):  # read once here so that a bad file is one line
        raise UserError(f'{path} is not a Resemblyzer checkpoint (no model_state)')
    return resemblyzer.VoiceEncoder(device, verbose=False, weights_fpath=path).eval()


def _main(argv):
    loaders = {'face': (face_embedder, 'vggface2'), 'audio_cnn': (audio_cnn, 'imagenet'),
               'voice': (voice_encoder, 'resemblyzer'),
               **{name: (lambda w, name=name: vit_encoder(name, w), 'default') for name in VIT_ENCODERS}}
    kind = argv[0] if argv else 'face'
    if kind not in loaders:
        print(f'usage: python -m common.weights {{{"|".join(loaders)}}} [weights]', file=sys.stderr)
        return 2
    loader, default = loaders[kind]
    weights = argv[1] if len(argv) > 1 else default
    try:
        loader(weights)
    except UserError as err:
        print(f'weights unavailable: {err}', file=sys.stderr)
        return 3
    print(f'{kind} weights {weights}: available')
    return 0


if __name__ == '__main__':
    sys.exit(_main(sys.argv[1:]))
