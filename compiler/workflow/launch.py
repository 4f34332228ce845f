"""``specc train --nproc N`` runs this file: torchrun (``torch.distributed.run``), its failures told in one line.

Rank 0 of the run prints its own error; here a process that died without a word (killed, or a rank after the first)
is named once, in place of torchrun's summary traceback. Run as a file, so it needs torch alone.
"""

import logging
import sys

from torch.distributed.elastic.multiprocessing.api import SignalException
from torch.distributed.elastic.multiprocessing.errors import ChildFailedError
from torch.distributed.run import parse_args, run


def main(argv: list[str]) -> int:
    logging.getLogger("torch.distributed.elastic").setLevel(logging.CRITICAL)  # this function reports failures
    try:
        run(parse_args(argv))
    except ChildFailedError as err:
        rank, failure = err.get_first_failure()
        code = failure.exitcode
        if code in (1, 130):  # bad input or interrupted: rank 0 has said so
            return code
        how = f"was killed by signal {-code}" if code < 0 else f"failed (exit code {code})"
        print(f"error: process {rank} of the run {how}; torchrun stopped the others", file=sys.stderr)
        return 3
    except SignalException:
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
