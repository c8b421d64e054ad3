"""Conformance suite: every search space passes these."""

from __future__ import annotations

import numpy as np
import optuna
import pandas as pd
import pytest
import torch

import search_spaces
from search_spaces import count_flops, count_params
from search_spaces.base import totals

# options that keep a space small enough for the suite; a space not named here runs with its defaults
SMALL = {"ofa_mbv3": {"resolutions": [128, 160]}, "hybrid_lm": {"seq_len": 32}}
TABLES = {"nasbench201": "nasbench201.csv.gz", "fbnet": "fbnet.csv.gz", "ofa_mbv3": "ofa.csv.gz"}


@pytest.fixture(params=search_spaces.names())
def space(request):
    return search_spaces.create(request.param, **SMALL.get(request.param, {}))


def test_registry_lists_every_space_and_rejects_unknown_names():
    assert {"nasbench201", "fbnet", "ofa_mbv3", "hybrid_lm"} <= set(search_spaces.names())
    with pytest.raises(KeyError, match="Unknown search space 'nope'.*nasbench201"):
        search_spaces.create("nope")
    with pytest.raises(ValueError, match="Unknown search space 'nope'"):  # bad input: one line from the CLI
        search_spaces.load_space("nope:x=1")


def test_the_spec_is_set_by_the_constructor(space):
    assert space.spec == space.name
    spec = f"{space.name}:" + ",".join(f"{k}={v}" for k, v in SMALL.get(space.name, {}).items())
    assert search_spaces.load_space(spec).spec == spec


def test_string_round_trip_and_validity(space):
    rng = np.random.default_rng(0)
    for _ in range(50):
        arch = space.sample(rng)
        s = space.to_str(arch)
        assert space.from_str(s) == arch
        assert space.to_str(space.from_str(s)) == s
        assert space.validate(arch) == arch


def test_mutate_changes_the_arch_and_crossover_mixes_parents(space):
    rng = np.random.default_rng(1)
    for _ in range(30):
        a, b = space.sample(rng), space.sample(rng)
        m = space.mutate(a, rng)
        assert m != a and space.validate(m) == m
        child = space.crossover(a, b, rng)
        assert space.validate(child) == child
        active = space.active(child)
        for i, value in enumerate(child):
            if active[i]:
                assert value in (a[i], b[i])


def test_suggest_builds_valid_archs_from_optuna_trials(space):
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=0))
    seen = set()
    for _ in range(10):
        trial = study.ask()
        arch = space.suggest(trial)
        assert space.validate(arch) == arch
        seen.add(arch)
        study.tell(trial, 0.0)
    assert len(seen) > 1


def test_suggest_varies_every_gene_that_can_matter(space):
    """Genes whose relevance depends on later genes (a stage's mixer on its repeat count) are asked too."""
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=1))
    seen: dict[int, set] = {i: set() for i in range(len(space.genes))}
    for _ in range(150):
        trial = study.ask()
        arch = space.suggest(trial)
        for i, on in enumerate(space.active(arch)):
            if on:
                seen[i].add(arch[i])
        study.tell(trial, 0.0)
    assert all(len(seen[i]) > 1 for i, g in enumerate(space.genes) if len(g.options) > 1), [
        g.name for i, g in enumerate(space.genes) if len(g.options) > 1 and len(seen[i]) < 2
    ]


def test_encoding_is_fixed_length_and_distinguishes_archs(space):
    rng = np.random.default_rng(2)
    archs = {space.sample(rng) for _ in range(300)}
    codes = {space.encode(a).tobytes() for a in archs}
    assert len(codes) == len(archs)
    assert all(space.encode(a).shape == (space.encoding_size,) for a in list(archs)[:10])


def test_flops_and_params_match_a_count_on_the_built_module(space):
    rng = np.random.default_rng(3)
    for _ in range(4):
        arch = space.sample(rng)
        model = space.build(arch)
        shape = space.input_shape(arch)
        assert space.flops(arch) == count_flops(model, shape)
        assert space.params(arch) == count_params(model)
        with torch.no_grad():
            out = model.eval()(space.example_input(arch))
        assert out.shape[0] == 1 and out.shape[-1] == space.num_classes


def test_operator_lists_add_up_and_match_the_built_module(space):
    rng = np.random.default_rng(4)
    for _ in range(4):
        arch = space.sample(rng)
        ops = space.operators(arch)
        assert totals(ops) == space.flops_params(arch)
        convs = sum(isinstance(m, torch.nn.Conv2d) for m in space.build(arch).modules())
        assert sum(op.kind == "conv" for op in ops) == convs
        assert all(op.c_in > 0 and op.c_out > 0 and op.in_hw >= op.out_hw >= 1 for op in ops)


def test_gene_graph_joins_existing_genes(space):
    edges = space.gene_graph()
    assert edges and all(0 <= i < len(space.genes) and 0 <= j < len(space.genes) and i != j for i, j in edges)
    if space.name == "nasbench201":  # edge ops 0->1 feeds 1->2 and 1->3; 2->3 is fed by 0->2 and 1->2
        assert {(0, 2), (0, 4)} <= set(edges) and {(1, 5), (2, 5)} <= set(edges) and (0, 1) not in edges


def test_bad_strings_get_errors_that_quote_them(space):
    for bad in ["", "garbage|x", '{"ks": 1}', "k3_e1-" * 3]:
        with pytest.raises(ValueError, match=space.name):
            space.from_str(bad)


@pytest.mark.parametrize("name", sorted(TABLES))
def test_every_string_of_the_shared_tables_parses(name, help_dir):
    space = search_spaces.create(name)
    strings = pd.read_csv(help_dir / TABLES[name], usecols=["arch"])["arch"]
    archs = [space.from_str(s) for s in strings]
    canon = [space.to_str(a) for a in archs]
    if name == "ofa_mbv3":
        assert [space.to_str(space.from_str(c)) for c in canon] == canon
    else:
        assert canon == list(strings)
    unique = set(archs)
    assert len({space.encode(a).tobytes() for a in unique}) == len(unique)


def test_nasbench201_enumerates_all_15625_cells():
    space = search_spaces.create("nasbench201")
    archs = list(space.enumerate())
    assert len(archs) == 15625 == len(set(archs)) == space.size()


def test_ofa_normalises_unused_layers_and_keeps_used_ones(help_dir):
    import json

    space = search_spaces.create("ofa_mbv3")
    raw = pd.read_csv(help_dir / "ofa.csv.gz", usecols=["arch"], nrows=200)["arch"]
    for s in raw:
        d, c = json.loads(s), json.loads(space.to_str(space.from_str(s)))
        assert c["d"] == d["d"] and c["r"] == d["r"]
        for i in range(20):
            if i % 4 < d["d"][i // 4]:
                assert (c["ks"][i], c["e"][i]) == (d["ks"][i], d["e"][i])
            else:
                assert (c["ks"][i], c["e"][i]) == (3, 3)


def test_ofa_serves_32px_data_with_a_width_multiplier():
    space = search_spaces.create("ofa_mbv3", resolutions=[32], width_mult=0.5, num_classes=10)
    arch = space.sample(np.random.default_rng(0))
    assert space.input_shape(arch) == (1, 3, 32, 32)
    model = space.build(arch).eval()
    assert model(torch.randn(2, 3, 32, 32)).shape == (2, 10)
    assert space.params(arch) == count_params(model)
    with pytest.raises(ValueError, match="gene 'r' must be one of \\[32\\]"):
        space.from_str(space.to_str(arch).replace('"r":32', '"r":160'))


def test_ofa_space_size_counts_distinct_architectures():
    space = search_spaces.create("ofa_mbv3", resolutions=[160])
    assert space.size() == (81 + 729 + 6561) ** 5
