"""The operations layer: the equipment registry and its locations, raw sensor
thresholds, live status, alarms and their lifecycle, hourly rollups. What the
stream writer and the HTTP API share of it lives here; neither lives here."""
