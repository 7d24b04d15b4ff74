"""Operations: the status server, metrics, systemd readiness and process tuning."""
