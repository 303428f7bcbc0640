/* stub: being written */
#include "autoconfig.h"
extern int rulespec_stub_;
int rulespec_stub_;
