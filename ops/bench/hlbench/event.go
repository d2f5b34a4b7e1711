package main

import "encoding/json"

// transferError is the sample event of ops/demo/transfer-error.json whose id is also its
// transfer id: the receiver finds it in the delivered body by that field (hookline's
// envelope does not carry the event id), and events are keyed by transfer id, so
// distinct ids spread the partitions.
func transferError(id string) map[string]any {
	return map[string]any{
		"id":          id,
		"type":        "transfer.error",
		"api_version": "2023-10-15",
		"data": map[string]any{
			"error": map[string]any{
				"destination_id":        "00000000-0000-0000-0000-000000000000",
				"destination_name":      "Foo Bar",
				"id_in_provider_system": "acme",
				"models":                []string{"users"},
				"is_full_refresh":       true,
				"transfer_id":           id,
				"transfer_status":       "PARTIAL_ERROR",
				"transfer_error_type":   "first_party",
				"transfer_log":          "Exception in thread \"main\" org.apache.spark.SparkException: Job aborted due to stage failure",
				"transfer_log_pretty":   "",
				"transfer_started_at":   "2023-10-15T16:19:08+00:00",
				"transfer_ended_at":     "2023-10-15T18:19:08+00:00",
				"in_app_url":            "",
			},
		},
	}
}

func transferErrorJSON(id string) []byte {
	b, err := json.Marshal(transferError(id))
	if err != nil {
		panic(err)
	}
	return b
}
