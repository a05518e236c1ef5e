// The S3 client for the bucket scripts/garage.sh sets up (its S3_* variables).
import { S3Client } from "@aws-sdk/client-s3";

export const bucket = process.env.S3_BUCKET;
export const s3 = new S3Client({
  endpoint: process.env.S3_ENDPOINT,
  region: process.env.S3_REGION,
  forcePathStyle: true,
  credentials: { accessKeyId: process.env.S3_ACCESS_KEY_ID, secretAccessKey: process.env.S3_SECRET_ACCESS_KEY },
});
