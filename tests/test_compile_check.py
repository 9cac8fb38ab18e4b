"""ci/compile_check.py: the part that reads SASS (the compiling itself runs in ci/test.sh)."""

import sys
from pathlib import Path

import pytest

pytest.importorskip("triton")  # the script imports triton's compiler (Linux only)
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "ci"))
import compile_check  # noqa: E402

#: Shaped like ``cuobjdump -sass`` output: stores before a three-deep loop nest whose back
#: edges take the forms ptxas emits (predicated, uniform, with a predicate operand), loads
#: at depths 1 to 3, a forward branch and a second back edge to one header (a "continue").
SASS = """
        /*0660*/                   STL [R1], R9 ;                 /* 0x0000000901007387 */
        /*06a0*/                   STL [R1+0x4], R4 ;             /* 0x0000040401007387 */
        /*0950*/                   LDL R7, [R1+0x4] ;             /* 0x0000040001077983 */
        /*0960*/              @!P1 BRA 0x3780 ;                   /* 0x0000002c00809947 */
        /*0990*/                   LDL R11, [R1] ;                /* 0x00000000010b7983 */
        /*0bc0*/                   FFMA R2, R3, R4, R2 ;          /* 0x0000000403027223 */
        /*1000*/                   LDL R12, [R1] ;                /* 0x00000000010c7983 */
        /*1100*/                   BRA.U !UP0, 0x1000 ;           /* 0x0000000000000000 */
        /*1200*/               @P2 BRA !P4, 0xbc0 ;               /* 0x0000000000000000 */
        /*1300*/                   LDL R13, [R1] ;                /* 0x0000000000000000 */
        /*3770*/                   BRA.DIV UR4, 0xbc0 ;           /* 0xffffffd400109947 */
        /*38c0*/                   BRA 0x950 ;                    /* 0xffffffd000207947 */
        /*3900*/                   EXIT ;                         /* 0x000000000000794d */
"""


def test_local_access_depths_places_each_access_in_its_loop_nest():
    assert compile_check.local_access_depths(SASS) == (
        "2 STL at loop depth 0, 2 LDL at loop depth 1, 1 LDL at loop depth 2, "
        "1 LDL at loop depth 3")


def test_no_local_accesses():
    assert compile_check.local_access_depths("/*0000*/ EXIT ;") == ""
