"""Who the presented token is: the portal shows only the actions its role may take
(the routes check the token again, whatever a client shows)."""

from __future__ import annotations

from typing import Literal

from fastapi import APIRouter, Request
from fastapi.responses import Response
from pydantic import BaseModel, ConfigDict, Field

from serve_ml.deployments.api.body import OrjsonRoute
from serve_ml.deployments.api.deps import Bearer, bearer_header, errors, json_response
from serve_ml.deployments.edge import PREFIX

router = APIRouter(prefix=PREFIX, route_class=OrjsonRoute)


class WhoAmI(BaseModel):
    model_config = ConfigDict(extra="forbid")
    role: Literal["admin", "operator", "viewer", "anonymous"] = Field(
        description="The strongest role the token holds; anonymous: no token, and reads need one.")


# security: anonymous or a bearer, both answered (the empty requirement says so)
@router.get("/whoami", response_model=WhoAmI, responses=errors(403, 413),
            openapi_extra={"security": [{}, {"HTTPBearer": []}]})
async def whoami(request: Request, creds: Bearer) -> Response:
    """The role of the presented token (403 if it is no token this server knows).
    Open to all, so that a page can ask before it has a token."""
    role = request.app.state.core.guard.role(bearer_header(creds))
    return json_response(WhoAmI(role=role).model_dump())
