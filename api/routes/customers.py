"""`DELETE /v1/customers/{id}` (scope `admin`): forget a customer (docs/operations.md
"Forget a customer"): the stream's state through a forget control message on the
by-identity topic (journeys.control; api/ never imports stream/), then every warehouse
row of the customer and its linked anonymous ids (warehouse.forget), then an audit row.

The API does not wait for the stream to act on the message: rows the stream writes for
events already in flight may land after the warehouse delete. `journeys forget` waits
for the stream before deleting, and calls this with `stream=done`.
"""

from __future__ import annotations

from typing import Annotated, Literal

from anyio import to_thread
from fastapi import APIRouter, Depends, Path, Query, Request
from pydantic import BaseModel, Field

from api.deps import ApiState, state
from journeys.control import send_forget
from warehouse import forget

router = APIRouter(prefix="/v1", tags=["customers"])


class ForgetOut(BaseModel):
    subject: str = Field(description="what the audit keeps of the id (a SHA-256 prefix)")
    anonymous_ids: int = Field(description="linked anonymous ids forgotten with it")
    rows: dict[str, int] = Field(description="rows deleted per table")
    total: int
    stream: str = Field(description="what became of the stream's state")


def _stream(st: ApiState, p: forget.ForgetPlan, told: str | None) -> str:
    if told == "done":
        return "forgotten first (journeys forget waited for it)"
    if st.settings.kafka is None:
        return "not reached: the API has no broker (run `journeys forget` for the stream)"
    offsets = send_forget(st.settings.kafka, p.customer_id, p.anonymous_ids)
    return f"forget sent to {st.settings.kafka.by_identity_topic} partitions {sorted(offsets)}"


@router.delete("/customers/{customer_id}", response_model=ForgetOut,
               summary="Forget a customer: stream state, warehouse rows, with an audit row")
async def forget_customer(
    request: Request,
    st: Annotated[ApiState, Depends(state)],
    customer_id: Annotated[str, Path(min_length=1, max_length=128)],
    stream: Annotated[Literal["done"] | None, Query(
        description="'done': the caller already had the stream forget it")] = None,
) -> ForgetOut:
    who = getattr(request.state, "api_key_name", None) or "anonymous (auth off)"

    def run() -> ForgetOut:
        p = forget.plan(st.warehouse, customer_id)
        said = _stream(st, p, stream)
        forget.apply(st.warehouse, p)
        forget.audit(st.warehouse, p, requested_by=who, via="api", stream=said)
        return ForgetOut(subject=forget.subject(customer_id), anonymous_ids=len(p.anonymous_ids),
                         rows=p.rows, total=p.total, stream=said)

    return await to_thread.run_sync(run)
