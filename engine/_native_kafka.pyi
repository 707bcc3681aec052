from datetime import datetime

def murmur2(data: bytes) -> int: ...
def envelope(
    namespace: bytes,
    aggregate_id: str,
    version: int,
    time: datetime,
    tenant_id: str,
    traceparent: str,
    type_headers: tuple[tuple[str, bytes], tuple[str, bytes]],
) -> tuple[str, int, list[tuple[str, bytes]]]: ...
