"""The one place that loads pretrained weights.

Each network takes a weights setting: the name of its published weights (downloaded once into the
library's own cache, by the library's own mechanism), a path to a local copy (offline machines, Kaggle
kernels), or 'none': untrained weights, seeded so that two runs give the same numbers (tests only).
A download that fails is one line that says what to do, never a traceback.

    python -m common.weights face vggface2   # exit 0 where the VGGFace2 weights can be had, else 3
    python -m common.weights audio_cnn imagenet
"""
import os
import sys
import warnings

import torch
from torch import nn

from common.config import UserError

UNTRAINED_SEED = 0



def describe(weights):
    """What a table records as the embedder: the weights' name, a file name, or the untrained seed."""
    if weights == 'none':
        return f'untrained(seed={UNTRAINED_SEED})'
    if os.path.exists(weights):
        return f'file:{os.path.basename(weights)}'
    return weights


def _load_file(path):
    try:
        state = torch.load(path, map_location='cpu', weights_only=True)
    except Exception as err:  # noqa: BLE001 - a corrupt file makes torch.load raise whatever its unpickler hits
        first = (str(err).strip().splitlines() or [''])[0]  # torch's unpickling errors run to 10 lines
        raise UserError(f'cannot read weights file {path}: {type(err).__name__} {first}') from None
    if isinstance(state, dict) and 'state_dict' in state:
        state = state['state_dict']
    return state


def face_embedder(weights='vggface2'):
    """InceptionResnetV1 returning the 512-d embedding *before* its L2 normalisation (eval mode, CPU).

    weights: 'vggface2' | 'casia-webface' (facenet-pytorch's download into $TORCH_HOME/checkpoints),
    a path to such a .pt file, or 'none' (untrained, seeded).
    """
    from facenet_pytorch import InceptionResnetV1
    if weights == 'none':
        torch.manual_seed(UNTRAINED_SEED)
        model = InceptionResnetV1(pretrained=None)
    elif os.path.isfile(weights):
        model = InceptionResnetV1(pretrained=None)
        state = {k: v for k, v in _load_file(weights).items() if not k.startswith('logits.')}
        try:
            model.load_state_dict(state)
        except RuntimeError as err:
            first = str(err).strip().splitlines()[0]
            raise UserError(f'{weights} is not an InceptionResnetV1 state dict: {first}') from None
    elif weights in ('vggface2', 'casia-webface'):
        try:
            model = InceptionResnetV1(pretrained=weights)
        except (OSError, RuntimeError) as err:  # URLError is an OSError
            from facenet_pytorch.models.inception_resnet_v1 import get_torch_home
            cache = os.path.join(get_torch_home(), 'checkpoints')
            raise UserError(
                f'cannot download the {weights} weights ({type(err).__name__}: {str(err)[:80]}); '
                f'put 20180402-114759-vggface2.pt in {cache} or pass --face_weights=/path/to/it.pt '
                f'(or --face_weights=none for an untrained embedder)') from None
    else:
        raise UserError(f'--face_weights={weights!r}: not a file, and not one of vggface2, '
                        f'casia-webface, none')
    # The 512-d output of last_bn, before F.normalize: the classifier head becomes the identity.
    model.classify = True
    model.logits = nn.Identity()
    return model.eval()


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
            first = str(err).strip().splitlines()[0]
            raise UserError(f'{weights} is not a {arch} state dict: {first}') from None
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
               'voice': (voice_encoder, 'resemblyzer')}
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
