"""The operations layer as the HTTP API sees it: one object per concern over one
pool (the caller's: the ingress shares its read side's)."""

from __future__ import annotations

from serve_ml.operations.aggregates import Aggregates
from serve_ml.operations.alarm_store import Alarms
from serve_ml.operations.audit import AuditLog
from serve_ml.operations.db import OpsDB, PoolGetter
from serve_ml.operations.deliveries import Deliveries
from serve_ml.operations.maintenance import Maintenance
from serve_ml.operations.registry import Registry
from serve_ml.operations.rule_store import AlarmRules
from serve_ml.operations.status import Status
from serve_ml.operations.threshold_store import Thresholds


class Operations:
    def __init__(self, pool: PoolGetter, *, alerts_topic: str, stale_after_s: float) -> None:
        db = OpsDB(pool)
        self.registry = Registry(db)
        self.thresholds = Thresholds(db, alerts_topic)
        self.status = Status(db, stale_after_s)
        self.alarms = Alarms(db, alerts_topic)
        self.aggregates = Aggregates(db)
        self.deliveries = Deliveries(db)
        self.maintenance = Maintenance(db)
        self.alarm_rules = AlarmRules(db)
        self.audit = AuditLog(db)
