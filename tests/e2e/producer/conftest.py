"""The Dovecot fixtures of the producer integration tests, shared with the e2e tests."""

from tests.integration.producer.conftest import dovecot, imap_user, make_settings, metrics

__all__ = ["dovecot", "imap_user", "make_settings", "metrics"]
