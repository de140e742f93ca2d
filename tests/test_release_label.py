"""The leaderboard label says when a protocol=release run removed subject backgrounds (the
released code removes none; docs/protocols.md section 1b)."""

from bench.report.load import BACKGROUND_MARK, method_label


def _run(**params):
    return {"identity": {"method": "ezigen"}, "method": {"name": "ezigen", "params": params}}


def test_release_with_background_removal_is_labelled():
    label = method_label(_run(protocol="release", subject_background="remove"))
    assert BACKGROUND_MARK in label and "protocol=release" in label
    assert BACKGROUND_MARK not in method_label(_run(protocol="release", subject_background="keep"))
    assert BACKGROUND_MARK not in method_label(_run(protocol="paper", subject_background="remove"))
    assert method_label(_run()) == "ezigen"


def test_the_leaderboard_explains_the_mark_and_names_the_release_exact_choice():
    from bench.report.leaderboard import BACKGROUND_NOTE
    assert BACKGROUND_MARK in BACKGROUND_NOTE and "--param subject_background=keep" in BACKGROUND_NOTE
