"""``serve-ml scale``: change one equipment deployment's autoscaling in place."""

from __future__ import annotations

import argparse
import json
import sys

from serve_ml.cli.state import read_state, state_path
from serve_ml.core.settings import Settings


def register(sub: argparse._SubParsersAction) -> None:
    sc = sub.add_parser("scale", help="change one equipment deployment's autoscaling, in place")
    sc.add_argument("equipment_id")
    sc.add_argument("--min", type=int, dest="min_replicas", required=True)
    sc.add_argument("--max", type=int, dest="max_replicas", required=True)
    sc.add_argument("--target-ongoing-requests", type=float)
    sc.add_argument("--upscale-delay-s", type=float, default=5.0)
    sc.add_argument("--downscale-delay-s", type=float, default=60.0)
    sc.set_defaults(func=_scale)


def _scale(args: argparse.Namespace) -> int:
    import ray

    from serve_ml.deployments.app import AppArgs, Autoscaling, dedicated_equipment
    from serve_ml.deployments.launch import apply_scaling, join_local, write_private
    from serve_ml.scoring.control import get_control

    state = read_state(args.settings)
    if state is None or "app_args" not in state:
        print("serve-ml is not running (start it with `make up`)", file=sys.stderr)
        return 1
    app_args = AppArgs.model_validate(state["app_args"])
    scaling = Autoscaling(min_replicas=args.min_replicas, max_replicas=args.max_replicas,
                          target_ongoing_requests=args.target_ongoing_requests,
                          upscale_delay_s=args.upscale_delay_s, downscale_delay_s=args.downscale_delay_s)
    join_local(state.get("ray_client_env") or {})
    ray.init(address=state["ray_gcs_address"], namespace="serve", log_to_driver=False)
    try:
        recipe = ray.get(get_control().recipe.remote())
        if recipe is None:
            print("the running graph has no recipe to redeploy (deployed from a config file)", file=sys.stderr)
            return 1
        settings = Settings(**recipe["settings"])
        dedicated = dedicated_equipment(app_args, settings)
        if args.equipment_id not in dedicated:
            print(f"{args.equipment_id!r} has no dedicated deployment (dedicated: {', '.join(dedicated)}); "
                  "it is scored by the ingress, which scales with `ingress_autoscaling`", file=sys.stderr)
            return 2
        new_args = apply_scaling(settings, app_args, args.equipment_id, scaling)
    finally:
        ray.shutdown()  # disconnects this driver; the cluster keeps running
    state["app_args"] = new_args.model_dump(mode="json")
    write_private(state_path(args.settings), json.dumps(state, indent=2))
    print(f"equipment-{args.equipment_id}: min {args.min_replicas}, max {args.max_replicas} (applied in place)")
    return 0
