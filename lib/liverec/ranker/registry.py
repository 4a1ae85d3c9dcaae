"""The old home of the ranker's pyfunc class (now ``liverec.ranker.pyfunc``; the registry and the gate are
``liverec.registry``). Kept because rankers registered before the move pickled their class under this module
path: a champion logged then must still load and score."""

from liverec.ranker.pyfunc import RankerModel

__all__ = ["RankerModel"]
