"""The server-side restorer Lambda: ECS reports a failed or rolling-back deployment, this puts the
gateway's previous mTLS mode back (docs/infrastructure.md). Standard library, boto3 and cutover_core
only: it is packaged without Docker, as plain files (stacks/restorer.py)."""
