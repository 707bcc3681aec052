"""The connector runtime: job topics, retries through delay topics, DLQ, circuit breakers, rate limits."""
