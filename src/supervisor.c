/* stub: being written */
#include "autoconfig.h"
extern int supervisor_stub_;
int supervisor_stub_;
