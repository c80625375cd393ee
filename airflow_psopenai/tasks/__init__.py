"""Task logic shared by operators, sensors, triggers and callbacks: waits, events, the cancel path, bulk selection."""
