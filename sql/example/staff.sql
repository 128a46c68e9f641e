-- Staff: the HR_LIBRARY_EMPLOYEE view of Example University's warehouse
-- (patronload_assets/institutions/example/rules.md §1). Runs on Oracle and on SQLite alike.
SELECT
    CAMPUS_ID, EMAIL, FIRST_NAME, MIDDLE_NAME, LAST_NAME, EMPLOYEE_TYPE,
    DEPARTMENT_CODE, APPOINTMENT_END_DATE, WORK_ADDRESS, WORK_PHONE, BARCODE
FROM HR_LIBRARY_EMPLOYEE
ORDER BY CAMPUS_ID NULLS LAST
