"""One settings base for every server: defaults < TOML/JSON file < environment < CLI flags.

Built on pydantic-settings' own file sources; everything is validated once, at start, and a bad value
becomes one ``ConfigError`` line naming the setting.
"""

from __future__ import annotations

import argparse
import ipaddress
import json
import tomllib
from contextvars import ContextVar
from pathlib import Path
from typing import Annotated, Any, ClassVar, Self

from posefleet.common.errors import PosefleetError
from posefleet.common.tls import TlsFiles, resolve
from pydantic import AfterValidator, Field, ValidationError
from pydantic_settings import (
    BaseSettings,
    JsonConfigSettingsSource,
    PydanticBaseSettingsSource,
    TomlConfigSettingsSource,
)

_CONFIG_FILE: ContextVar[Path | None] = ContextVar("posefleet_config_file", default=None)


def _ip_address(value: str) -> str:
    ipaddress.ip_address(value)  # raises ValueError naming the bad value
    return value


#: A setting that must be an IP address (the interfaces zeroconf binds, the addresses a node advertises).
IpAddress = Annotated[str, AfterValidator(_ip_address)]


class ConfigError(PosefleetError):
    """Settings that cannot be used (bad value, unreadable or malformed file)."""


class FileSettings(BaseSettings):
    """Settings read from flags, the environment (``env_prefix`` of the subclass) and a config file; every
    server's fleet TLS options among them (``tls_files``)."""

    #: Names the settings in error messages ("node", "coordinator").
    what: ClassVar[str] = "posefleet"

    pki: Path | None = Field(None, description="fleet PKI directory: ca.crt, NAME.crt, NAME.key")
    ca: Path | None = Field(None, description="fleet CA certificate (PEM)")
    cert: Path | None = Field(None, description="this server's certificate (PEM)")
    key: Path | None = Field(None, description="its private key (PEM)")
    insecure: bool = Field(False, description="no TLS and no authentication: development only, warned at start")

    def tls_files(self, name: str | None) -> TlsFiles | None:
        """The server's certificate files (``name`` in ``pki``); None with ``insecure``; else ``TlsError``."""
        return resolve(
            what=f"posefleet {self.what}",
            insecure=self.insecure,
            pki=self.pki,
            name=name,
            ca=self.ca,
            cert=self.cert,
            key=self.key,
        )

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        path = _CONFIG_FILE.get()
        if path is None:
            return init_settings, env_settings  # first wins: flags, then the environment
        file: PydanticBaseSettingsSource = (
            JsonConfigSettingsSource(settings_cls, json_file=path)
            if path.suffix == ".json"
            else TomlConfigSettingsSource(settings_cls, toml_file=path)
        )
        return init_settings, env_settings, file

    @classmethod
    def load(cls, config_file: Path | None = None, **flags: Any) -> Self:
        """Settings from the file, the environment and ``flags`` (``None`` flags are unset)."""
        if config_file is not None and not config_file.is_file():
            raise ConfigError(f"{config_file}: no such settings file")
        token = _CONFIG_FILE.set(config_file)
        try:
            return cls(**{k: v for k, v in flags.items() if v is not None})
        except ValidationError as exc:
            problems = "; ".join(f"{'.'.join(map(str, e['loc'])) or 'settings'}: {e['msg']}" for e in exc.errors())
            raise ConfigError(f"invalid {cls.what} settings: {problems}") from None
        except (tomllib.TOMLDecodeError, json.JSONDecodeError, UnicodeDecodeError) as exc:
            raise ConfigError(f"{config_file}: not a valid settings file: {exc}") from None
        finally:
            _CONFIG_FILE.reset(token)

    @classmethod
    def from_args(cls, args: argparse.Namespace) -> Self:
        """Settings for a parsed subcommand: its flags named like the fields, and ``--config``."""
        flags = {k: getattr(args, k) for k in cls.model_fields if hasattr(args, k)}
        return cls.load(getattr(args, "config", None), **flags)
