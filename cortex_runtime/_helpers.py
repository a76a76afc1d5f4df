"""Wires the Python callables the C core uses on its slow paths."""
from . import _core, _payload, log, response


def install() -> None:
    _core.install_helpers(
        decode_form=_payload.decode_form,
        response_parts=response.response_parts,
        make_headers=_payload.Headers,
        log_exception=log.log_exception,
        format_exception=log.format_exception,
    )
