"""The one place that loads pretrained weights.

Each network takes a weights setting: the name of its published weights (downloaded once into the
library's own cache, by the library's own mechanism), a path to a local copy (offline machines, Kaggle
kernels), or 'none': untrained weights, seeded so that two runs give the same numbers (tests only).
A download that fails is one line that says what to do, never a traceback.

    python -m common.weights face vggface2   # exit 0 where the VGGFace2 weights can be had, else 3
"""
import os
import pickle
import sys

import torch
from torch import nn

UNTRAINED_SEED = 0


class WeightsUnavailable(Exception):
    """Published weights could not be had (offline, blocked); the message says what to do."""


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
    except (OSError, RuntimeError, EOFError, KeyError, ValueError, pickle.UnpicklingError) as err:
        raise WeightsUnavailable(f'cannot read weights file {path}: {type(err).__name__} {err}') from None
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
            raise WeightsUnavailable(f'{weights} is not an InceptionResnetV1 state dict: {first}') from None
    elif weights in ('vggface2', 'casia-webface'):
        try:
            model = InceptionResnetV1(pretrained=weights)
        except (OSError, RuntimeError) as err:  # URLError is an OSError
            from facenet_pytorch.models.inception_resnet_v1 import get_torch_home
            cache = os.path.join(get_torch_home(), 'checkpoints')
            raise WeightsUnavailable(
                f'cannot download the {weights} weights ({type(err).__name__}: {str(err)[:80]}); '
                f'put 20180402-114759-vggface2.pt in {cache} or pass --face_weights=/path/to/it.pt '
                f'(or --face_weights=none for an untrained embedder)') from None
    else:
        raise WeightsUnavailable(f'--face_weights={weights!r}: not a file, and not one of vggface2, '
                                 f'casia-webface, none')
    # The 512-d output of last_bn, before F.normalize: the classifier head becomes the identity.
    model.classify = True
    model.logits = nn.Identity()
    return model.eval()


def _main(argv):
    kind, weights = (argv + ['vggface2'])[:2] if argv else ('face', 'vggface2')
    loaders = {'face': face_embedder}
    try:
        loaders[kind](weights)
    except WeightsUnavailable as err:
        print(f'weights unavailable: {err}', file=sys.stderr)
        return 3
    print(f'{kind} weights {weights}: available')
    return 0


if __name__ == '__main__':
    sys.exit(_main(sys.argv[1:]))
