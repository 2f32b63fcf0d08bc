"""The producer: IMAP mailboxes and local mailbox files onto the stream, each email exactly once."""
