#include "autoconfig.h"
#include "testutil.h"
int main(void){ if (CU_initialize_registry()!=CUE_SUCCESS) return 99; return tu_run(); }
