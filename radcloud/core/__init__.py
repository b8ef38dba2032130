"""The foundations every layer uses: errors, settings, the Redis and OpenWhisk clients, retries."""
