"""The error hierarchy crosses Ray's process boundaries (pickle) with every field."""

from __future__ import annotations

import pickle

from serve_ml.core.errors import BundleInvalid, EquipmentNotFound, Overloaded, ServeMLError


def test_every_field_survives_a_pickle_round_trip() -> None:
    for err in (Overloaded("equipment deployment 'press-02'", 7), BundleInvalid("/r/a/b/1.0.0", "bad manifest"),
                EquipmentNotFound("ghost", ["press-02"])):
        back = pickle.loads(pickle.dumps(err))
        assert type(back) is type(err) and back.__dict__ == err.__dict__ and str(back) == str(err)
        assert back.to_dict() == err.to_dict() and back.status_code == err.status_code
    assert pickle.loads(pickle.dumps(Overloaded("x", 7))).retry_after_s == 7
    assert pickle.loads(pickle.dumps(BundleInvalid("p", "why"))).reason == "why"


def test_a_status_set_on_an_instance_survives_too() -> None:
    err = ServeMLError("from a replica")
    err.status_code = 418
    assert pickle.loads(pickle.dumps(err)).status_code == 418
