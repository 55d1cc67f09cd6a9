"""The method registry and the lists of methods in layers that may not import it."""

from __future__ import annotations


def test_every_list_of_methods_names_the_registrys_policy_methods():
    """The settings, the loop and the Dashboard's loop panel list methods in layers that may not import
    the registry; they must still name the same ones."""
    from playground.loop_panel import LOOP_METHODS
    from settings import TRAIN_METHODS
    from simulation.cli import DEFAULT_MIX, DEFAULT_POLICY, METHODS
    from trainers import registry

    policy = set(registry.names(policy_only=True))
    assert set(TRAIN_METHODS) == policy | {"auto"}
    loop = policy - {"sft"}  # the loop's users give no demonstrations
    assert set(METHODS) == set(LOOP_METHODS) == set(DEFAULT_MIX) == set(DEFAULT_POLICY) == loop
