"""Each model family names the modules FSDP shards (``fsdp_units``): every encoder/decoder layer is in
exactly one unit, and no unit holds a parameter the rest of the model also uses (shared or tied
embeddings, the output weight the loss reads). Under a one-process FSDP2 group the sharded model computes
the same loss and gradients as the plain one, which also proves that no unit's parameter is read outside
its unit's forward (it would still be a sharded DTensor there)."""

from __future__ import annotations

import socket
from collections.abc import Callable, Iterator

import pytest
import torch
import torch.distributed as dist
from torch import Tensor, nn

from transduce.data.cmvn import GlobalCMVN
from transduce.errors import ConfigError
from transduce.models.ctc import CTCModelConfig, build_ctc
from transduce.models.rnn import RNNConfig, build_rnn
from transduce.models.transformer import TransformerConfig, build
from transduce.train.distributed import fsdp_units
from transduce.train.loss import CTCLoss, SequenceLoss

V = 11  # vocabulary; 0 is PAD (and the CTC blank)
# layers also return their caches (views) and training drops them: no in-place op can skip a gather
pytestmark = pytest.mark.filterwarnings("ignore:FSDP2-wrapped module .* returned a view tensor")


def transformer() -> nn.Module:
    return build(TransformerConfig(dim=16, heads=2, ffn_dim=32, encoder_layers=2, decoder_layers=3, dropout=0.0), V, V)


def rnn_tied() -> nn.Module:
    cfg = RNNConfig(embed_dim=8, hidden=16, encoder_layers=2, decoder_layers=2, attention="location",
                    share_embeddings=True, tie_embeddings=True, dropout=0.0)
    return build_rnn(cfg, V, V)


def rnn_gru() -> nn.Module:
    cfg = RNNConfig(cell="gru", embed_dim=8, hidden=16, encoder_layers=1, decoder_layers=3, bidirectional=False,
                    attention="multihead_additive", heads=2, coverage=True, dropout=0.0)
    return build_rnn(cfg, V, V)


def ctc(**overrides: object) -> Callable[[], nn.Module]:
    def make() -> nn.Module:
        cfg = CTCModelConfig(**{"input_dim": 16, "dim": 16, "heads": 2, "layers": 2, "ffn_dim": 32, "kernel_size": 3,
                                "dropout": 0.0, **overrides})  # type: ignore[arg-type]
        return build_ctc(cfg, V, GlobalCMVN(16))
    return make


# family -> (builder, parameter-name prefixes that must be sharded; every other parameter stays in the root)
FAMILIES: dict[str, tuple[Callable[[], nn.Module], tuple[str, ...]]] = {
    "transformer": (transformer, ("encoder.layers.", "decoder.layers.")),
    "rnn-lstm-tied": (rnn_tied, ("encoder.rnn.",)),
    "rnn-gru": (rnn_gru, ("encoder.rnn.",)),
    "ctc-conformer": (ctc(), ("encoder.blocks.",)),
    "hybrid-conformer-r2l": (ctc(decoder_layers=2, reverse_decoder_layers=1),
                             ("encoder.blocks.", "decoder.layers.", "reverse_decoder.layers.")),
    "hybrid-transformer": (ctc(encoder="transformer", decoder_layers=1), ("encoder.layers.", "decoder.layers.")),
}


@pytest.mark.parametrize("family", FAMILIES)
def test_units_cover_every_layer_once_and_no_shared_parameter(family: str) -> None:
    make, sharded = FAMILIES[family]
    model = make()
    units = fsdp_units(model)
    unit_of: dict[int, int] = {}  # id(parameter) -> index of its unit
    for i, unit in enumerate(units):
        for param in unit.parameters():
            assert id(param) not in unit_of, f"a parameter of unit {i} is also in unit {unit_of[id(param)]}"
            unit_of[id(param)] = i
    names: dict[int, list[str]] = {}
    for name, param in model.named_parameters(remove_duplicate=False):
        names.setdefault(id(param), []).append(name)
    for pid, aliases in names.items():
        in_layers = [name.startswith(sharded) for name in aliases]
        if pid in unit_of:  # a sharded parameter: a layer's, and not tied to anything outside the layers
            assert all(in_layers), f"{aliases} is in unit {unit_of[pid]} but also used outside the layers"
        else:
            assert not any(in_layers), f"{aliases} belongs to a layer but is in no unit"
    assert len(unit_of) < len(names)  # something (embeddings, front end, heads) stays in the root unit


class Toy(nn.Module):
    """A model whose units are given by the test."""

    def __init__(self, pick: Callable[[Toy], list[nn.Module]]) -> None:
        super().__init__()
        self.embed = nn.Embedding(5, 4)
        self.body = nn.Sequential(nn.Linear(4, 4), nn.Linear(4, 4))
        self.out = nn.Linear(4, 5, bias=False)
        self.out.weight = self.embed.weight
        self.pick = pick

    def fsdp_units(self) -> list[nn.Module]:
        return self.pick(self)


@pytest.mark.parametrize(("pick", "message"), [
    (lambda m: [m.body, m.body[0]], "units body and body.0 share a parameter"),
    (lambda m: [m.out], "embed.weight is the same parameter as one in unit out"),
    (lambda m: [nn.Linear(2, 2)], "a Linear that is not a submodule"),
])
def test_bad_units_are_refused_by_name(pick: Callable[[Toy], list[nn.Module]], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        fsdp_units(Toy(pick))


def test_a_family_without_units_is_a_config_error_naming_its_class() -> None:
    with pytest.raises(ConfigError, match="train.parallel: fsdp .* Bilinear has no fsdp_units"):
        fsdp_units(nn.Bilinear(2, 2, 3))


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture(scope="module")
def one_rank_group() -> Iterator[None]:
    """A one-process gloo group, so that ``fully_shard`` installs its hooks and DTensors."""
    if dist.is_initialized():
        pytest.skip("a process group already exists")
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{_free_port()}", rank=0, world_size=1)
    yield
    dist.destroy_process_group()


def _batch(family: str) -> tuple[Tensor, ...]:
    """A padded batch of two examples in the loss module's argument order."""
    g = torch.Generator().manual_seed(0)
    lens = torch.tensor([7, 4])
    targets = torch.randint(3, V, (2, 5), generator=g)
    targets[1, 3:] = 0
    if family.startswith(("ctc", "hybrid")):
        return torch.randn(2, 60, 16, generator=g), torch.tensor([60, 41]), targets[:, :3], torch.tensor([3, 2])
    src = torch.randint(3, V, (2, 7), generator=g)
    src[1, 4:] = 0
    tgt_in = torch.cat([torch.ones(2, 1, dtype=torch.long), targets[:, :-1]], dim=1)
    return src, lens, tgt_in, targets


def _loss_module(family: str, model: nn.Module) -> nn.Module:
    if family.startswith(("ctc", "hybrid")):
        return CTCLoss(model, torch.autocast("cpu", enabled=False), ctc_weight=0.4, reverse_weight=0.3)  # type: ignore[arg-type]
    return SequenceLoss(model, epsilon=0.1, ignore_index=0)


@pytest.mark.parametrize("family", FAMILIES)
def test_sharded_loss_and_gradients_equal_the_plain_model(family: str, one_rank_group: None) -> None:
    from torch.distributed.fsdp import fully_shard
    from torch.distributed.tensor import DTensor

    torch.manual_seed(0)
    plain = FAMILIES[family][0]()
    sharded = FAMILIES[family][0]()
    sharded.load_state_dict(plain.state_dict())
    wrapped = _loss_module(family, sharded)
    for unit in fsdp_units(sharded):
        fully_shard(unit)
    fully_shard(wrapped)
    batch = _batch(family)
    expected, _ = _loss_module(family, plain)(*batch)
    expected.backward()
    loss, _ = wrapped(*batch)
    loss.backward()
    torch.testing.assert_close(loss, expected, rtol=1e-5, atol=1e-6)
    grads = {name: p.grad for name, p in plain.named_parameters()}
    for name, param in sharded.named_parameters():
        assert isinstance(param, DTensor), name
        torch.testing.assert_close(param.grad.full_tensor(), grads[name], rtol=1e-5, atol=1e-6, msg=name)


@pytest.mark.parametrize("family", ["transformer", "rnn-lstm-tied"])
def test_a_whole_checkpoint_loads_into_the_sharded_model_despite_shared_embeddings(
        family: str, one_rank_group: None) -> None:
    """Resuming a sharded run: the source and target embedding are one module, which the state-dict API
    visits once; the checkpoint names it twice (as ``model.state_dict()`` does)."""
    from torch.distributed.checkpoint.state_dict import StateDictOptions, get_state_dict
    from torch.distributed.fsdp import fully_shard

    from transduce.train.checkpoint import load_into

    torch.manual_seed(0)
    source = FAMILIES[family][0]()
    source_optimizer = torch.optim.Adam(source.parameters(), lr=0.1)
    loss, _ = _loss_module(family, source)(*_batch(family))
    loss.backward()
    source_optimizer.step()
    weights, optimizer_state = get_state_dict(source, source_optimizer)
    assert source.state_dict().keys() - weights.keys() == set()  # the shared names are all there
    target = FAMILIES[family][0]()
    for unit in fsdp_units(target):
        fully_shard(unit)
    fully_shard(target)
    target_optimizer = torch.optim.Adam(target.parameters(), lr=0.1)
    load_into(target, target_optimizer, weights, optimizer_state)
    loaded, loaded_optimizer = get_state_dict(target, target_optimizer,
                                              options=StateDictOptions(full_state_dict=True))
    for name, tensor in source.state_dict().items():
        torch.testing.assert_close(loaded[name], tensor, rtol=0, atol=0, msg=name)
    for name, state in optimizer_state["state"].items():
        torch.testing.assert_close(loaded_optimizer["state"][name]["exp_avg"], state["exp_avg"], msg=name)


def test_weights_that_do_not_fit_are_named() -> None:
    from transduce.train.checkpoint import MismatchError, load_into

    model = transformer()
    optimizer = torch.optim.Adam(model.parameters())
    weights = dict(model.state_dict())
    weights["decoder.extra.weight"] = weights.pop("encoder.final_norm.weight")
    with pytest.raises(MismatchError, match=r"missing \['encoder.final_norm.weight'\], unexpected "
                                            r"\['decoder.extra.weight'\]"):
        load_into(model, optimizer, weights, optimizer.state_dict())
