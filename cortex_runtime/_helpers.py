"""Wires the Python callables the C core uses on its slow paths."""
from . import _core, _payload, log, response


def install() -> None:
    _core.install_helpers(
        json_loads=_payload.json_loads,
        json_dumps=response.json_dumps,
        decode_form=_payload.decode_form,
        response_parts=response.response_parts,
        make_headers=_payload.Headers,
        log_exception=log.log_exception,
        format_exception=log.format_exception,
        dumps_extra=log.dumps_extra,
    )
