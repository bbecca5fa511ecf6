"""Oracle tests: our encoders against the published reference code, run by `make test-oracles`
after that target installed tests/oracles/requirements.txt. Not part of the default suite."""

import oracle_shims as shims

shims.install()
