"""The cutover's core that runs in two places: the operator's tool and the restorer Lambda.

Standard library only: the Lambda Python runtime brings boto3 and nothing else of ours, and
there is no Docker here to bundle third-party code. tests/test_core_is_stdlib.py keeps it so.
"""
