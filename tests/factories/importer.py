"""Helpers of the test_importer_* modules: good and bad CSV rows."""

from __future__ import annotations

from datetime import datetime

NOW = datetime(2026, 1, 15, 12, 0)

GOOD_STUDENTS = (
    "student_id,name,email,grade_level\n"
    " S10001 , Ada Lovelace ,ADA@School.Example,9\n"
    'S10002,"Hopper, Grace",grace@school.example,12\n'
)
GOOD_GRADES = (
    "student_id,subject,score,max_score,recorded_at\n"
    "S10001,Math,95.5,100,2025-10-01T08:00:00Z\n"
    "S10002,Science,18,20,2025-10-01T10:30:00+02:00\n"
    "S00001,Art,70,,2025-10-02 09:15:00\n"
    "S10001,History,88,,\n"
)
BAD_GRADES = (
    "student_id,subject,score,max_score,recorded_at\n"
    "S10001,Math,95,100,2025-10-01T08:00:00Z\n"
    "S10001,Math,101,,\n"
    "S00001,Art,abc,,\n"
    "\n"
    "S99999,Art,50,,\n"
    "S00001,History,50,0,2025-10-01\n"
    "S00001,English,40,50,yesterday\n"
    "S10002,Math,70,,\n"
    "S00001,Math,70\n"
    ",Art,nan,,\n"
)
