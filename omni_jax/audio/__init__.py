"""Audio: file I/O (io), and later the streaming log-mel frontend and the vocoders."""
