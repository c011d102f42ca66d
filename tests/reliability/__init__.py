"""Fault-injection tests: killed writers, full disks, concurrent readers, server restarts."""
