"""How routes reach the services built at start-up."""

from __future__ import annotations

from fastapi import Request

from homeport.services.container import Services


def services(request: Request) -> Services:
    return request.app.state.services
